package emulator

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"golang.org/x/crypto/ssh"
)

// maxBody bounds request bodies; a profile is at most 32 KiB anyway.
const maxBody = 1 << 20

// apiRoute is a parsed OS Login API request path.
type apiRoute struct {
	m           apiMethod
	user        string
	fingerprint string
	project     string
	location    string // projects.locations methods
}

// parseAPIRoute maps method and escaped path to a discovery method. Segments
// are split before unescaping, so "%2F" cannot split a user id, and
// url.PathUnescape keeps '+' a plus: the Go client sends e-mails unescaped
// (reserved expansion), e.g. /v1/users/a+b@x.com:importSshPublicKey.
func parseAPIRoute(method, escapedPath string) (apiRoute, bool) {
	rest, ok := strings.CutPrefix(escapedPath, "/v1/")
	if !ok {
		return apiRoute{}, false
	}
	segs := strings.Split(rest, "/")
	for i, s := range segs {
		u, err := url.PathUnescape(s)
		if err != nil || u == "" {
			return apiRoute{}, false
		}
		segs[i] = u
	}
	if rt, ok := parseSignRoute(method, segs); ok {
		return rt, true
	}
	if segs[0] != "users" || len(segs) < 2 {
		return apiRoute{}, false
	}
	rt := apiRoute{user: segs[1]}
	id := ""
	switch {
	case len(segs) == 2 && method == http.MethodPost:
		if i := strings.LastIndex(segs[1], ":"); i > 0 && segs[1][i+1:] == "importSshPublicKey" {
			rt.user, id = segs[1][:i], "users.importSshPublicKey"
		}
	case len(segs) == 3 && segs[2] == "loginProfile" && method == http.MethodGet:
		id = "users.getLoginProfile"
	case len(segs) == 3 && segs[2] == "sshPublicKeys" && method == http.MethodPost:
		id = "users.sshPublicKeys.create"
	case len(segs) == 4 && segs[2] == "sshPublicKeys":
		rt.fingerprint = segs[3]
		id = map[string]string{http.MethodGet: "users.sshPublicKeys.get",
			http.MethodPatch: "users.sshPublicKeys.patch", http.MethodDelete: "users.sshPublicKeys.delete"}[method]
	case len(segs) == 4 && segs[2] == "projects":
		rt.project = segs[3]
		id = map[string]string{http.MethodDelete: "users.projects.delete",
			http.MethodPost: "users.projects.provisionPosixAccount"}[method]
	}
	if id == "" {
		return apiRoute{}, false
	}
	rt.m = methodByID(id)
	return rt, true
}

// serveAPI is the OS Login API face: faults, then authentication, scopes,
// permission and quota, then the method. The state is computed under the
// lock and written after it, so slow clients and latency faults never block
// other requests.
func (e *Emulator) serveAPI(w http.ResponseWriter, r *http.Request) {
	// Google's answers carry Google's time, and clients measure their clock
	// difference with it; so the emulator's carry its own movable clock.
	// net/http keeps a Date header set before the status is written.
	w.Header().Set("Date", e.Now().UTC().Format(http.TimeFormat))
	rt, ok := parseAPIRoute(r.Method, r.URL.EscapedPath())
	if !ok {
		errNotFound().write(w)
		return
	}
	e.count(rt.m.id)
	e.log.Debug("api call", "method", rt.m.id, "user", rt.user)
	f, fired := e.fireFault(rt.m.id, rt.m.write, false)
	if fired {
		w = e.withLatency(w, r, f)
		if !e.preFaults(w, r, f, func(code int) {
			errForStatus(code, rt.m.write, e.cfg.ProjectNumber, f.RetryAfter).write(w)
		}) {
			return
		}
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		errInvalid(fmt.Sprintf("Invalid JSON payload received. %v", err)).write(w)
		return
	}
	resp, aerr := e.callAPI(r, rt, body, fired && f.BlockKeyManagement)
	if aerr != nil {
		e.log.Debug("api error", "method", rt.m.id, "code", aerr.Code, "message", aerr.Message)
		aerr.write(w)
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

func (e *Emulator) callAPI(r *http.Request, rt apiRoute, body []byte, blockKeys bool) (any, *apiError) {
	if rt.m.id == methodSign {
		return e.callSign(r, rt, body)
	}
	var in sshPublicKeyIn
	switch rt.m.id {
	case "users.importSshPublicKey", "users.sshPublicKeys.create", "users.sshPublicKeys.patch":
		if err := decodeBody(body, &in); err != nil {
			return nil, err
		}
	case "users.projects.provisionPosixAccount":
		var req struct {
			Regions []string `json:"regions"`
		}
		if err := decodeBody(body, &req); err != nil {
			return nil, err
		}
	}
	q := r.URL.Query()

	e.mu.Lock()
	defer e.mu.Unlock()
	e.purgeLocked()
	a, aerr := e.authorizeLocked(r, rt.m, rt.user)
	if aerr != nil {
		return nil, aerr
	}
	if rt.m.write && e.quotaLocked(a.Email) {
		return nil, errQuota(true, e.cfg.ProjectNumber, 0)
	}

	switch rt.m.id {
	case "users.getLoginProfile":
		return a.profileJSON(q.Get("projectId"), nil), nil

	case "users.importSshPublicKey":
		key := deref(in.Key)
		if key != "" && !validKey(key) {
			return nil, errInvalid("")
		}
		if key != "" && !blockKeys {
			if _, err := e.putKeyLocked(a, key, in.ExpirationTimeUsec.V); err != nil {
				return nil, asAPIError(err)
			}
		}
		e.ensurePosixLocked(a, q.Get("projectId"))
		return importResponseJSON{LoginProfile: a.profileJSON(q.Get("projectId"), nil)}, nil

	case "users.sshPublicKeys.create":
		key := deref(in.Key)
		if !validKey(key) {
			return nil, errInvalid("")
		}
		if a.key(Fingerprint(key)) != nil {
			return nil, errAlreadyExists()
		}
		k, err := e.putKeyLocked(a, key, in.ExpirationTimeUsec.V)
		if err != nil {
			return nil, asAPIError(err)
		}
		return a.keyJSON(k), nil

	case "users.sshPublicKeys.get":
		k := a.key(rt.fingerprint)
		if k == nil {
			return nil, errNotFound()
		}
		return a.keyJSON(k), nil

	case "users.sshPublicKeys.patch":
		k := a.key(rt.fingerprint)
		if k == nil {
			return nil, errNotFound()
		}
		if aerr := patchKey(k, in, q.Get("updateMask")); aerr != nil {
			return nil, aerr
		}
		return a.keyJSON(k), nil

	case "users.sshPublicKeys.delete":
		a.removeKey(rt.fingerprint) // unknown fingerprints answer 200 too (contract 1.4)
		return struct{}{}, nil

	case "users.projects.delete":
		for i, p := range a.projects {
			if p == rt.project {
				a.projects = append(a.projects[:i], a.projects[i+1:]...)
				break
			}
		}
		return struct{}{}, nil

	case "users.projects.provisionPosixAccount":
		e.ensurePosixLocked(a, rt.project)
		return a.posixJSON(rt.project), nil
	}
	return nil, errNotFound()
}

// patchKey applies an update mask. Only the expiry can really change: the
// key string is the key's identity. An absent expiry with the mask clears
// it (gcloud --ttl 0); no mask means "update all".
func patchKey(k *storedKey, in sshPublicKeyIn, mask string) *apiError {
	fields := []string{"expirationTimeUsec", "key"}
	if mask != "" {
		fields = strings.Split(mask, ",")
	}
	for _, f := range fields {
		switch strings.TrimSpace(f) {
		case "expirationTimeUsec", "expiration_time_usec":
			k.expiryUsec = in.ExpirationTimeUsec.V
		case "key":
			if in.Key != nil && *in.Key != "" && *in.Key != k.key {
				return errInvalid("")
			}
		default:
			return errInvalid(fmt.Sprintf("Invalid update mask path: %q", f))
		}
	}
	return nil
}

// validKey accepts one authorized_keys line (optionally newline-terminated)
// that OpenSSH can parse, as Google rejects malformed keys with 400.
func validKey(key string) bool {
	line := strings.TrimSuffix(strings.TrimSuffix(key, "\n"), "\r")
	if line == "" || strings.ContainsAny(line, "\r\n") {
		return false
	}
	_, _, _, rest, err := ssh.ParseAuthorizedKey([]byte(line))
	return err == nil && len(bytes.TrimSpace(rest)) == 0
}

func decodeBody(body []byte, v any) *apiError {
	if len(bytes.TrimSpace(body)) == 0 {
		return nil
	}
	if err := json.Unmarshal(body, v); err != nil {
		return errInvalid(fmt.Sprintf("Invalid JSON payload received. %v", err))
	}
	return nil
}

func asAPIError(err error) *apiError {
	var aerr *apiError
	if errors.As(err, &aerr) {
		return aerr
	}
	return errForStatus(500, false, "", 0)
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
