package emulator

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"html"
	"net/http"
	"slices"
	"strings"
)

const metadataPrefix = "/computeMetadata/v1/"

// setMetadataHeaders sets what the real server sends on every answer; Go's
// metadata client and OnGCE probes look for Metadata-Flavor.
func setMetadataHeaders(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Metadata-Flavor", "Google")
	h.Set("Server", "Metadata Server for VM")
	h.Set("X-Xss-Protection", "0")
	h.Set("X-Frame-Options", "SAMEORIGIN")
}

// writeMetadata answers like the metadata server: scalars as
// application/text, JSON as application/json, with an ETag.
func writeMetadata(w http.ResponseWriter, code int, contentType, body string) {
	sum := sha256.Sum256([]byte(body))
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("ETag", hex.EncodeToString(sum[:8]))
	w.WriteHeader(code)
	_, _ = w.Write([]byte(body)) // a vanished client cannot be told anything
}

func writeMetadataJSON(w http.ResponseWriter, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		writeMetadata(w, http.StatusInternalServerError, "text/plain; charset=utf-8", "internal error\n")
		return
	}
	writeMetadata(w, http.StatusOK, "application/json", string(b))
}

func metadataNotFound(w http.ResponseWriter) {
	writeMetadata(w, http.StatusNotFound, "text/html; charset=UTF-8", "<!DOCTYPE html>\n<title>Error 404 (Not Found)!!1</title>\n<p><b>404.</b> <ins>That’s an error.</ins>\n<p>The requested URL was not found on this server. <ins>That’s all we know.</ins>\n")
}

// metadataForbidden is Google's 403 page for requests the server refuses.
func metadataForbidden(w http.ResponseWriter, path, why string) {
	writeMetadata(w, http.StatusForbidden, "text/html; charset=UTF-8",
		"<!DOCTYPE html>\n<title>Error 403 (Forbidden)!!1</title>\n<p><b>403.</b> <ins>That’s an error.</ins>\n"+
			"<p>Your client does not have permission to get URL <code>"+html.EscapeString(path)+"</code> from this server. "+
			why+" <ins>That’s all we know.</ins>\n")
}

// serveMetadataRoot answers GET /, which OnGCE-style probes send without the
// flavor header and judge by the response header.
func (e *Emulator) serveMetadataRoot(w http.ResponseWriter, r *http.Request) {
	setMetadataHeaders(w)
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		writeMetadata(w, http.StatusMethodNotAllowed, "text/plain; charset=utf-8", "Method not allowed\n")
		return
	}
	writeMetadata(w, http.StatusOK, "application/text", "computeMetadata/\n")
}

// metadataID names a metadata request for call counts and fault selectors.
func metadataID(path string) string {
	switch {
	case path == "oslogin/users":
		return "metadata.oslogin.users"
	case path == "oslogin/authorize":
		return "metadata.oslogin.authorize"
	case path == "oslogin/groups":
		return "metadata.oslogin.groups"
	case strings.HasPrefix(path, "instance/service-accounts/") && strings.HasSuffix(path, "/token"):
		return "metadata.token"
	}
	return "metadata.get"
}

// serveMetadata is the metadata server face under /computeMetadata/v1/.
func (e *Emulator) serveMetadata(w http.ResponseWriter, r *http.Request) {
	setMetadataHeaders(w)
	path, ok := strings.CutPrefix(r.URL.Path, metadataPrefix)
	if !ok {
		metadataNotFound(w)
		return
	}
	id := metadataID(path)
	e.count(id)
	if r.Header.Get("Metadata-Flavor") != "Google" {
		metadataForbidden(w, r.URL.Path, "Missing Metadata-Flavor:Google header.")
		return
	}
	if r.Header.Get("X-Forwarded-For") != "" {
		metadataForbidden(w, r.URL.Path, "Request with X-Forwarded-For header is not allowed.")
		return
	}
	if f, fired := e.fireFault(id, false, true); fired {
		w = e.withLatency(w, r, f)
		if !e.preFaults(w, r, f, func(code int) {
			writeMetadata(w, code, "text/plain; charset=utf-8", http.StatusText(code)+"\n")
		}) {
			return
		}
	}
	if r.Method != http.MethodGet {
		writeMetadata(w, http.StatusMethodNotAllowed, "text/plain; charset=utf-8", "Method not allowed\n")
		return
	}
	if strings.HasPrefix(path, "oslogin/") {
		e.serveGuest(w, r, path)
		return
	}
	if rest, ok := strings.CutPrefix(path, "instance/service-accounts/"); ok {
		e.serveServiceAccounts(w, r, rest)
		return
	}
	text := func(s string) { writeMetadata(w, http.StatusOK, "application/text", s) }
	c := e.cfg
	switch path {
	case "":
		text("instance/\noslogin/\nproject/\n")
	case "project/project-id":
		text(c.ProjectID)
	case "project/numeric-project-id":
		text(c.ProjectNumber)
	case "instance/id":
		text(c.InstanceID)
	case "instance/name":
		text(c.InstanceName)
	case "instance/hostname":
		text(c.InstanceName + "." + c.Zone + ".c." + c.ProjectID + ".internal")
	case "instance/zone":
		text("projects/" + c.ProjectNumber + "/zones/" + c.Zone)
	case "instance/attributes/enable-oslogin":
		if c.OSLoginDisabled {
			metadataNotFound(w)
			return
		}
		text("TRUE")
	default: // includes universe/universe-domain: 404 means googleapis.com
		metadataNotFound(w)
	}
}

// attachedLocked is the VM's service account: Accounts[0] if it is one.
func (e *Emulator) attachedLocked() *account {
	if len(e.accounts) > 0 && e.accounts[0].ServiceAccount {
		return e.accounts[0]
	}
	return nil
}

// serveServiceAccounts answers instance/service-accounts/..., where the
// account segment is "default" or the attached account's e-mail.
func (e *Emulator) serveServiceAccounts(w http.ResponseWriter, r *http.Request, rest string) {
	e.mu.Lock()
	sa := e.attachedLocked()
	e.mu.Unlock()
	if rest == "" {
		if sa == nil {
			writeMetadata(w, http.StatusOK, "application/text", "")
			return
		}
		writeMetadata(w, http.StatusOK, "application/text", "default/\n"+sa.Email+"/\n")
		return
	}
	name, item, _ := strings.Cut(rest, "/")
	if sa == nil || (name != "default" && !strings.EqualFold(name, sa.Email)) {
		metadataNotFound(w)
		return
	}
	switch item {
	case "":
		writeMetadata(w, http.StatusOK, "application/text", "email\nscopes\ntoken\n")
	case "email":
		writeMetadata(w, http.StatusOK, "application/text", sa.Email)
	case "scopes":
		writeMetadata(w, http.StatusOK, "application/text", strings.Join(e.cfg.InstanceScopes, "\n")+"\n")
	case "token":
		scopes := e.cfg.InstanceScopes
		if s := r.URL.Query().Get("scopes"); s != "" {
			scopes = grantableScopes(strings.Split(s, ","), e.cfg.InstanceScopes)
		}
		e.mu.Lock()
		tok, exp := e.metadataTokenLocked(sa, scopes)
		now := e.nowLocked()
		e.mu.Unlock()
		writeMetadataJSON(w, tokenResponse(tok, exp, now))
	default:
		metadataNotFound(w)
	}
}

// grantableScopes narrows a token request to the VM's access scopes: a VM's
// token never carries more than the instance was given, whatever the caller
// asks for. cloud-platform covers every scope, and a write scope covers its
// read-only twin. When nothing requested is granted the token carries the
// instance's scopes, and the API call that needed more fails with 403.
func grantableScopes(requested, instance []string) []string {
	covers := func(have, want string) bool {
		return have == want || have == ScopeCloudPlatform ||
			(have == ScopeCompute && want == ScopeComputeReadOnly)
	}
	var out []string
	for _, want := range requested {
		want = strings.TrimSpace(want)
		if want == "" || slices.Contains(out, want) {
			continue
		}
		for _, have := range instance {
			if covers(have, want) {
				out = append(out, want)
				break
			}
		}
	}
	if len(out) == 0 {
		return slices.Clone(instance)
	}
	return out
}
