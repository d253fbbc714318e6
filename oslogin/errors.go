package oslogin

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"google.golang.org/api/googleapi"
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
	var gerr *googleapi.Error
	return errors.As(err, &gerr) && gerr.Code == http.StatusBadRequest && strings.Contains(gerr.Message, profileFullMessage)
}

func isNotFound(err error) bool {
	var gerr *googleapi.Error
	return errors.As(err, &gerr) && gerr.Code == http.StatusNotFound
}

// explain turns OS Login's refusals into errors that say what to change.
// Google's own text stays at the end for searching.
func (c *Client) explain(op string, err error) error {
	var gerr *googleapi.Error
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

func (c *Client) explainAPI(op string, gerr *googleapi.Error) error {
	err := error(apiError{gerr})
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

func insufficientScopes(gerr *googleapi.Error) bool {
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

// apiError prints a Google API error on one line, as a command-line tool's
// error must be; googleapi.Error appends its details on further lines. The
// reason is always there: Google's message, else the text of the answer's
// body, else the HTTP status. The original stays reachable with errors.As.
type apiError struct{ err *googleapi.Error }

func (e apiError) Error() string {
	reason := oneLine(e.err.Message)
	if reason == "" {
		reason = bodyReason(e.err.Body)
	}
	if reason == "" {
		reason = "no reason given"
	}
	msg := fmt.Sprintf("OS Login answered %d %s: %s", e.err.Code, http.StatusText(e.err.Code), reason)
	if len(e.err.Errors) == 1 && e.err.Errors[0].Reason != "" {
		msg += " (" + e.err.Errors[0].Reason + ")"
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

func (e apiError) Unwrap() error { return e.err }

// readable wraps err so that it prints as describe says, and still
// unwraps to the original.
func readable(err error) error {
	var gerr *googleapi.Error
	if errors.As(err, &gerr) {
		return apiError{gerr}
	}
	return plain(err)
}

// describe is err as a user reads it: Google's answer on one line, or the
// host that could not be reached.
func describe(err error) string {
	var gerr *googleapi.Error
	if errors.As(err, &gerr) {
		return apiError{gerr}.Error()
	}
	return plain(err).Error()
}
