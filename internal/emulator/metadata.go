package emulator

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"html"
	"io"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
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
	case path == "oslogin/certificates":
		return "metadata.oslogin.certificates"
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
	vm, ok := e.requestVM(r)
	if !ok {
		writeMetadata(w, http.StatusNotFound, "text/plain; charset=utf-8",
			"unknown instance "+strconv.Quote(r.Header.Get(InstanceHeader))+" named by "+InstanceHeader+"\n")
		return
	}
	if rest, ok := strings.CutPrefix(path, "instance/guest-attributes/"); ok {
		e.serveGuestAttributes(w, r, vm, rest)
		return
	}
	if r.Method != http.MethodGet {
		writeMetadata(w, http.StatusMethodNotAllowed, "text/plain; charset=utf-8", "Method not allowed\n")
		return
	}
	if strings.HasPrefix(path, "oslogin/") {
		e.serveGuest(w, r, vm, path)
		return
	}
	if rest, ok := strings.CutPrefix(path, "instance/service-accounts/"); ok {
		e.serveServiceAccounts(w, r, vm, rest)
		return
	}
	text := func(s string) { writeMetadata(w, http.StatusOK, "application/text", s) }
	c := e.cfg
	if key, ok := strings.CutPrefix(path, "instance/attributes/"); ok {
		serveAttributes(w, vm.Metadata, key)
		return
	}
	if key, ok := strings.CutPrefix(path, "project/attributes/"); ok {
		serveAttributes(w, vm.project, key)
		return
	}
	switch path {
	case "":
		text("instance/\noslogin/\nproject/\n")
	case "project/project-id":
		text(c.ProjectID)
	case "project/numeric-project-id":
		text(c.ProjectNumber)
	case "instance/id":
		text(vm.ID)
	case "instance/name":
		text(vm.Name)
	case "instance/hostname":
		text(vm.Name + "." + vm.Zone + ".c." + c.ProjectID + ".internal")
	case "instance/zone":
		text("projects/" + c.ProjectNumber + "/zones/" + vm.Zone)
	case "instance/network-interfaces/0/ip":
		text(vm.NetworkIP)
	case "instance/network-interfaces/0/access-configs/0/external-ip":
		if vm.NatIP == "" {
			metadataNotFound(w)
			return
		}
		text(vm.NatIP)
	default: // includes universe/universe-domain: 404 means googleapis.com
		metadataNotFound(w)
	}
}

// InstanceHeader names the instance a metadata request speaks as (its name
// or numeric id, optionally "zone/name"). On GCE the server knows the VM by
// the caller's address; on one loopback host the caller says it. Without the
// header the request comes from the default instance (Config.InstanceName).
const InstanceHeader = "X-Emulator-Instance"

// vmView is what one metadata request needs of its instance, copied under
// the lock so that answers (and latency faults) never hold it.
type vmView struct {
	InstanceState
	project  map[string]string // commonInstanceMetadata
	attached *Account          // nil: no service account
	osLogin  bool              // effective enable-oslogin
	certOnly bool              // effective enable-oslogin-certificates
}

// requestVM resolves InstanceHeader (or the default instance).
func (e *Emulator) requestVM(r *http.Request) (vmView, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	in := e.defaultInstanceLocked()
	if ref := r.Header.Get(InstanceHeader); ref != "" {
		zone, name, ok := strings.Cut(ref, "/")
		if !ok {
			zone, name = "", ref
		}
		in = e.instanceLocked(zone, name)
	}
	if in == nil {
		return vmView{}, false
	}
	v := vmView{InstanceState: in.snapshot(), project: maps.Clone(e.projectMeta),
		osLogin:  e.metadataTrueLocked(in, MetaEnableOSLogin),
		certOnly: e.metadataTrueLocked(in, MetaEnableCertificates)}
	if sa := e.attachedAccountLocked(in); sa != nil {
		a := sa.Account
		v.attached = &a
	}
	return v, true
}

// serveAttributes answers .../attributes/ (the keys, one a line) and
// .../attributes/KEY (the value).
func serveAttributes(w http.ResponseWriter, md map[string]string, key string) {
	if key == "" {
		keys := slices.Sorted(maps.Keys(md))
		var b strings.Builder
		for _, k := range keys {
			b.WriteString(k + "\n")
		}
		writeMetadata(w, http.StatusOK, "application/text", b.String())
		return
	}
	v, ok := md[key]
	if !ok {
		metadataNotFound(w)
		return
	}
	writeMetadata(w, http.StatusOK, "application/text", v)
}

// serveGuestAttributes is instance/guest-attributes/NS/KEY: the guest agent
// PUTs its host keys there; GET reads a value back, DELETE removes it.
func (e *Emulator) serveGuestAttributes(w http.ResponseWriter, r *http.Request, vm vmView, rest string) {
	ns, key, _ := strings.Cut(rest, "/")
	switch r.Method {
	case http.MethodPut:
		body, err := io.ReadAll(io.LimitReader(r.Body, maxGuestAttrValue+1))
		if err != nil {
			writeMetadata(w, http.StatusBadRequest, "text/plain; charset=utf-8", "cannot read body\n")
			return
		}
		e.mu.Lock()
		in := e.instanceLocked(vm.Zone, vm.ID)
		if in == nil {
			err = ErrUnknownInstance
		} else {
			err = e.putGuestAttrLocked(in, ns, key, string(body))
		}
		e.mu.Unlock()
		switch {
		case errors.Is(err, errGuestAttrsDisabled):
			metadataForbidden(w, r.URL.Path, "Guest attributes endpoint access is disabled.")
		case err != nil:
			writeMetadata(w, http.StatusBadRequest, "text/plain; charset=utf-8", err.Error()+"\n")
		default:
			writeMetadata(w, http.StatusOK, "application/text", "")
		}
	case http.MethodGet:
		e.mu.Lock()
		in := e.instanceLocked(vm.Zone, vm.ID)
		enabled := in != nil && e.metadataTrueLocked(in, MetaEnableGuestAttrs)
		var found []GuestAttribute
		if enabled {
			found = guestAttrsLocked(in, rest)
		}
		e.mu.Unlock()
		switch {
		case !enabled:
			metadataForbidden(w, r.URL.Path, "Guest attributes endpoint access is disabled.")
		case key != "" && len(found) == 1:
			writeMetadata(w, http.StatusOK, "application/text", found[0].Value)
		case key == "" && len(found) > 0:
			var b strings.Builder
			for _, a := range found {
				b.WriteString(a.Key + "\n")
			}
			writeMetadata(w, http.StatusOK, "application/text", b.String())
		default:
			metadataNotFound(w)
		}
	case http.MethodDelete:
		e.mu.Lock()
		if in := e.instanceLocked(vm.Zone, vm.ID); in != nil {
			in.guestAttrs = slices.DeleteFunc(in.guestAttrs, func(a GuestAttribute) bool {
				return a.Namespace == ns && a.Key == key
			})
		}
		e.mu.Unlock()
		writeMetadata(w, http.StatusOK, "application/text", "")
	default:
		writeMetadata(w, http.StatusMethodNotAllowed, "text/plain; charset=utf-8", "Method not allowed\n")
	}
}

// serveServiceAccounts answers instance/service-accounts/..., where the
// account segment is "default" or the attached account's e-mail.
func (e *Emulator) serveServiceAccounts(w http.ResponseWriter, r *http.Request, vm vmView, rest string) {
	sa := vm.attached
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
		writeMetadata(w, http.StatusOK, "application/text", strings.Join(vm.Scopes, "\n")+"\n")
	case "token":
		scopes := vm.Scopes
		if s := r.URL.Query().Get("scopes"); s != "" {
			scopes = grantableScopes(strings.Split(s, ","), vm.Scopes)
		}
		e.mu.Lock()
		var tok string
		var exp, now time.Time
		a := e.lookupLocked(sa.Email)
		if a != nil {
			tok, exp = e.metadataTokenLocked(a, scopes)
			now = e.nowLocked()
		}
		e.mu.Unlock()
		if a == nil {
			metadataNotFound(w)
			return
		}
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
