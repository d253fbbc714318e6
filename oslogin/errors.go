package oslogin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
)

var (
	// ErrKeyManagementBlocked means OS Login answered an import with success
	// but did not store the key: the Cloud Identity policy that lets users
	// manage their SSH keys through the OS Login API is off.
	ErrKeyManagementBlocked = errors.New("OS Login accepted the key but did not store it: an administrator policy blocks " +
		"SSH key management through the OS Login API for this account (Cloud Identity: " +
		"\"Allow users to manage their SSH public keys via the OS Login API\")")
	// ErrPermission means the account may not manage its OS Login profile.
	ErrPermission = errors.New("permission denied")
	// ErrScopes means the token lacks an OAuth scope OS Login requires.
	ErrScopes = errors.New("insufficient OAuth scopes")
	// ErrUnauthenticated means OS Login rejected the credentials themselves.
	ErrUnauthenticated = errors.New("credentials rejected")
)

// profileFullMessage is the text OS Login answers, with HTTP 400, when a key
// would push the login profile past its size limit.
const profileFullMessage = "Login profile size exceeds 32 KiB"

func isProfileFull(err error) bool {
	var gerr *apiError
	return errors.As(err, &gerr) && gerr.Code == http.StatusBadRequest && strings.Contains(gerr.Message, profileFullMessage)
}

func isNotFound(err error) bool {
	var gerr *apiError
	return errors.As(err, &gerr) && gerr.Code == http.StatusNotFound
}

// explain turns OS Login's refusals into errors that say what to change.
// Google's own text stays at the end for searching.
func (c *Client) explain(op string, err error) error {
	var gerr *apiError
	if !errors.As(err, &gerr) {
		return fmt.Errorf("%s: %w", op, plain(err))
	}
	// The caller's deadline or cancellation stays visible to errors.Is
	// (retry marks an answer after which it gave up).
	for _, end := range []error{context.DeadlineExceeded, context.Canceled} {
		if errors.Is(err, end) {
			return fmt.Errorf("%w (gave up: %w)", c.explainAPI(op, gerr), end)
		}
	}
	return c.explainAPI(op, gerr)
}

func (c *Client) explainAPI(op string, gerr *apiError) error {
	err := error(gerr)
	switch gerr.Code {
	case http.StatusUnauthorized:
		return fmt.Errorf("%s: %w: the token for %s was refused (expired, revoked or not for this service); "+
			"check the credentials: %w", op, ErrUnauthenticated, c.account, err)
	case http.StatusForbidden:
		if insufficientScopes(gerr) {
			return fmt.Errorf("%s: %w: the token needs the cloud-platform or compute scope; "+
				"on a VM, set its access scopes to cloud-platform: %w",
				op, ErrScopes, err)
		}
		return fmt.Errorf("%s: %w: %s may not manage its OS Login profile in project %s; grant it "+
			"roles/compute.osLogin (or roles/compute.osAdminLogin for sudo) on the project and "+
			"roles/iam.serviceAccountUser on the VMs' service account, or impersonate an account that has them: %w",
			op, ErrPermission, c.account, c.project, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}

func insufficientScopes(gerr *apiError) bool {
	if strings.Contains(gerr.Message, "insufficient authentication scopes") {
		return true
	}
	for _, item := range gerr.Errors {
		if item.Reason == "insufficientPermissions" || item.Reason == "ACCESS_TOKEN_SCOPE_INSUFFICIENT" {
			return true
		}
	}
	return false
}

// apiError is an answer of OS Login other than 2xx: its status, what
// Google's error envelope {"error":{"code","message","errors":[{"reason"}]}}
// says, the body as it came, and the headers (Retry-After, Date). It reads
// the envelope as googleapi.Error did, so that the same answers get the
// same treatment.
type apiError struct {
	Code    int
	Message string
	Errors  []errorItem
	Body    string
	Header  http.Header
}

// errorItem is one entry of the envelope's errors array.
type errorItem struct {
	Reason  string `json:"reason"`
	Message string `json:"message"`
}

// newAPIError reads an error answer. The envelope is used only when the
// whole body was read and is one (a JSON object, or an array whose first
// element is one) with the field types Google sends; otherwise the status
// and the body stand alone. A code in the envelope wins over the status.
func newAPIError(resp *http.Response, body []byte, complete bool) *apiError {
	e := &apiError{Code: resp.StatusCode, Body: string(body), Header: resp.Header}
	if !complete {
		return e
	}
	type envelope struct {
		Error *struct {
			Code    int         `json:"code"`
			Message string      `json:"message"`
			Details []any       `json:"details"` // unused; a malformed one voids the envelope, as for googleapi
			Errors  []errorItem `json:"errors"`
		} `json:"error"`
	}
	env := new(envelope)
	var err error
	if len(body) > 0 && body[0] == '[' {
		arr := []*envelope{env}
		err = json.Unmarshal(body, &arr)
	} else {
		err = json.Unmarshal(body, env)
	}
	if err != nil || env.Error == nil {
		return e
	}
	if env.Error.Code != 0 {
		e.Code = env.Error.Code
	}
	e.Message = env.Error.Message
	e.Errors = env.Error.Errors
	return e
}

// Error prints the answer on one line, as a command-line tool's error
// must be. The reason is always there: Google's message, else the text of
// the answer's body, else the HTTP status.
func (e *apiError) Error() string {
	reason := oneLine(e.Message)
	if reason == "" {
		reason = bodyReason(e.Body)
	}
	if reason == "" {
		reason = "no reason given"
	}
	msg := fmt.Sprintf("OS Login answered %d %s: %s", e.Code, http.StatusText(e.Code), reason)
	if len(e.Errors) == 1 && e.Errors[0].Reason != "" {
		msg += " (" + e.Errors[0].Reason + ")"
	}
	return msg
}

// bodyReason makes a reason out of a body that is not Google's JSON error:
// the title of an HTML page, or the first line of text, cut short.
func bodyReason(body string) string {
	body = strings.TrimSpace(body)
	if i := strings.Index(strings.ToLower(body), "<title>"); i >= 0 {
		rest := body[i+len("<title>"):]
		if j := strings.Index(strings.ToLower(rest), "</title>"); j >= 0 {
			return oneLine(rest[:j])
		}
	}
	if strings.HasPrefix(body, "<") {
		return ""
	}
	line, _, _ := strings.Cut(body, "\n")
	line = oneLine(line)
	if len(line) > 200 {
		line = line[:200] + "…"
	}
	return line
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// plain turns a transport failure into a sentence without the request's
// URL (url.Error prints method, full URL and query): the host it could not
// reach, and why. The detail stays reachable with errors.As and in debug
// logs.
func plain(err error) error {
	var uerr *url.Error
	if !errors.As(err, &uerr) {
		return err
	}
	host := uerr.URL
	if u, perr := url.Parse(uerr.URL); perr == nil && u.Host != "" {
		host = u.Host
	}
	return &reachError{host: host, err: uerr}
}

// reachError is a request that got no answer.
type reachError struct {
	host string
	err  *url.Error
}

func (e *reachError) Error() string {
	inner := e.err.Err
	if errors.Is(inner, context.DeadlineExceeded) || e.err.Timeout() {
		return fmt.Sprintf("no answer from %s in time", e.host)
	}
	return fmt.Sprintf("cannot reach %s: %v", e.host, inner)
}

func (e *reachError) Unwrap() error { return e.err }

// readable wraps err so that it prints as describe says, and still
// unwraps to the original.
func readable(err error) error {
	var gerr *apiError
	if errors.As(err, &gerr) {
		return gerr
	}
	return plain(err)
}

// describe is err as a user reads it: Google's answer on one line, or the
// host that could not be reached.
func describe(err error) string {
	var gerr *apiError
	if errors.As(err, &gerr) {
		return gerr.Error()
	}
	return plain(err).Error()
}
