package emulator

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// Google's texts (contract 4.1, 4.2). Clients match on code and reason, and
// people match on the text, so these are kept verbatim.
const (
	msgProfileTooLarge = "Login profile size exceeds 32 KiB. Delete profile values to make additional space."
	msgInvalidArgument = "Request contains an invalid argument."
	msgMissingCreds    = "Request is missing required authentication credential. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project."
	msgInvalidCreds    = "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project."
	msgInsufficient    = "Request had insufficient authentication scopes."
	msgForbidden       = "The caller does not have permission"
	msgNotFound        = "Requested entity was not found."
	msgAlreadyExists   = "Requested entity already exists"
	msgInternal        = "Internal error encountered."
	msgUnavailable     = "The service is currently unavailable."
	msgDeadline        = "The request timed out. Please try again."
	googleAuthRealm    = `Bearer realm="https://accounts.google.com/"`
)

// apiError is an OS Login API error, written in Google's JSON envelope so
// that googleapi.Error carries Code, Message and Errors[0].Reason.
type apiError struct {
	Code    int
	Status  string // canonical gRPC code name, e.g. INVALID_ARGUMENT
	Message string
	Reason  string // errors[0].reason, e.g. badRequest
	Details []any  // google.rpc detail objects, optional
	Header  http.Header
}

func (e *apiError) Error() string {
	return fmt.Sprintf("%d %s: %s (%s)", e.Code, e.Status, e.Message, e.Reason)
}

func (e *apiError) write(w http.ResponseWriter) {
	type item struct {
		Message string `json:"message"`
		Domain  string `json:"domain"`
		Reason  string `json:"reason"`
	}
	var body struct {
		Error struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
			Errors  []item `json:"errors"`
			Status  string `json:"status,omitempty"`
			Details []any  `json:"details,omitempty"`
		} `json:"error"`
	}
	body.Error.Code, body.Error.Message, body.Error.Status = e.Code, e.Message, e.Status
	body.Error.Errors = []item{{Message: e.Message, Domain: "global", Reason: e.Reason}}
	body.Error.Details = e.Details
	for k, v := range e.Header {
		w.Header()[k] = v
	}
	writeJSON(w, e.Code, body)
}

func errorInfo(reason string, metadata map[string]string) map[string]any {
	return map[string]any{
		"@type":    "type.googleapis.com/google.rpc.ErrorInfo",
		"reason":   reason,
		"domain":   "googleapis.com",
		"metadata": metadata,
	}
}

func errInvalid(msg string) *apiError {
	if msg == "" {
		msg = msgInvalidArgument
	}
	return &apiError{Code: 400, Status: "INVALID_ARGUMENT", Message: msg, Reason: "badRequest"}
}

func errProfileTooLarge() *apiError { return errInvalid(msgProfileTooLarge) }

func errUnauthenticated(missing bool) *apiError {
	e := &apiError{Code: 401, Status: "UNAUTHENTICATED", Message: msgInvalidCreds, Reason: "authError",
		Header: http.Header{"Www-Authenticate": {googleAuthRealm}}}
	if missing {
		e.Message, e.Reason = msgMissingCreds, "required"
		e.Details = []any{errorInfo("CREDENTIALS_MISSING", map[string]string{"service": "oslogin.googleapis.com"})}
	}
	return e
}

func errInsufficientScopes(method string) *apiError {
	return &apiError{Code: 403, Status: "PERMISSION_DENIED", Message: msgInsufficient, Reason: "insufficientPermissions",
		Header: http.Header{"Www-Authenticate": {googleAuthRealm + `, error="insufficient_scope", scope="` +
			ScopeCloudPlatform + " " + ScopeCompute + `"`}},
		Details: []any{errorInfo("ACCESS_TOKEN_SCOPE_INSUFFICIENT", map[string]string{
			"service": "oslogin.googleapis.com", "method": "google.cloud.oslogin.v1.OsLoginService." + rpcName(method)})}}
}

func errForbidden() *apiError {
	return &apiError{Code: 403, Status: "PERMISSION_DENIED", Message: msgForbidden, Reason: "forbidden"}
}

func errNotFound() *apiError {
	return &apiError{Code: 404, Status: "NOT_FOUND", Message: msgNotFound, Reason: "notFound"}
}

func errAlreadyExists() *apiError {
	return &apiError{Code: 409, Status: "ALREADY_EXISTS", Message: msgAlreadyExists, Reason: "alreadyExists"}
}

// errQuota is the 429 of a per-user quota (contract 4.2, 4.3). retryAfter is
// sent as a Retry-After header only when positive: Google's quota errors do
// not carry one, injected faults may.
func errQuota(write bool, projectNumber string, retryAfter time.Duration) *apiError {
	kind, metric, limit := "Read requests", "oslogin.googleapis.com/read_requests", "ReadRequestsPerMinutePerUser"
	if write {
		kind, metric, limit = "Write requests", "oslogin.googleapis.com/write_requests", "WriteRequestsPerMinutePerUser"
	}
	consumer := "project_number:" + projectNumber
	e := &apiError{Code: 429, Status: "RESOURCE_EXHAUSTED", Reason: "rateLimitExceeded",
		Message: fmt.Sprintf("Quota exceeded for quota metric '%s' and limit '%s per minute per user' of service 'oslogin.googleapis.com' for consumer '%s'.",
			kind, kind, consumer),
		Details: []any{errorInfo("RATE_LIMIT_EXCEEDED", map[string]string{
			"service": "oslogin.googleapis.com", "quota_metric": metric, "quota_limit": limit, "consumer": "projects/" + projectNumber})}}
	if retryAfter > 0 {
		e.Header = http.Header{"Retry-After": {strconv.Itoa(int((retryAfter + time.Second - 1) / time.Second))}}
	}
	return e
}

// errForStatus maps an injected status code to Google's envelope for it.
func errForStatus(code int, write bool, projectNumber string, retryAfter time.Duration) *apiError {
	var e *apiError
	switch code {
	case 400:
		e = errInvalid("")
	case 401:
		e = errUnauthenticated(false)
	case 403:
		e = errForbidden()
	case 404:
		e = errNotFound()
	case 409:
		e = errAlreadyExists()
	case 429:
		return errQuota(write, projectNumber, retryAfter)
	case 500:
		e = &apiError{Code: 500, Status: "INTERNAL", Message: msgInternal, Reason: "backendError"}
	case 503:
		e = &apiError{Code: 503, Status: "UNAVAILABLE", Message: msgUnavailable, Reason: "backendError"}
	case 504:
		e = &apiError{Code: 504, Status: "DEADLINE_EXCEEDED", Message: msgDeadline, Reason: "backendError"}
	default:
		status := "UNKNOWN"
		if code >= 500 {
			status = "UNAVAILABLE"
		}
		e = &apiError{Code: code, Status: status, Message: http.StatusText(code), Reason: "backendError"}
	}
	if retryAfter > 0 {
		if e.Header == nil {
			e.Header = http.Header{}
		}
		e.Header.Set("Retry-After", strconv.Itoa(int((retryAfter+time.Second-1)/time.Second)))
	}
	return e
}

// writeJSON writes v without HTML escaping, so key strings read naturally.
func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v) // the client went away; nothing left to tell it
}
