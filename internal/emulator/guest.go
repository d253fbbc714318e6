package emulator

import (
	"net/http"
	"net/url"
	"strconv"
)

// guestUsersJSON is the answer of oslogin/users (contract 7.4).
type guestUsersJSON struct {
	LoginProfiles []loginProfileJSON `json:"loginProfiles,omitempty"`
	NextPageToken string             `json:"nextPageToken,omitempty"`
}

// serveGuest is the VM side of OS Login, what the guest's NSS module, PAM
// module and authorized-keys command ask the metadata server (POSIX groups
// are in groups.go). An account is
// visible once it has a POSIX account (created by import or provisioning);
// whether it may log in is authorize's business. Keys that have expired by
// the emulator clock are never served, purged or not.
func (e *Emulator) serveGuest(w http.ResponseWriter, r *http.Request, vm vmView, path string) {
	if !vm.osLogin {
		metadataNotFound(w)
		return
	}
	q := r.URL.Query()
	if path == "oslogin/groups" { // the guest sends this e-mail unencoded
		if email, ok := literalQueryValue(r.URL.RawQuery, "email"); ok {
			q.Set("email", email)
		}
	}
	code, v := e.guestAnswer(vm, path, q)
	switch code {
	case http.StatusOK:
		writeMetadataJSON(w, v)
	case http.StatusNotFound:
		metadataNotFound(w)
	default:
		writeMetadata(w, code, "text/plain; charset=utf-8", http.StatusText(code)+"\n")
	}
}

// guestAnswer computes the answer under the lock; serveGuest writes it
// after, so a latency fault never holds the lock.
func (e *Emulator) guestAnswer(vm vmView, path string, q url.Values) (int, any) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.purgeLocked()
	nowUsec := e.nowLocked().UnixMicro()
	unexpired := func(k *storedKey) bool { return k.expiryUsec == 0 || nowUsec <= k.expiryUsec }
	one := func(a *account) guestUsersJSON {
		return guestUsersJSON{LoginProfiles: []loginProfileJSON{a.profileJSON(e.cfg.ProjectID, unexpired)}}
	}
	var visible []*account
	for _, a := range e.accounts {
		if isVisible(a) {
			visible = append(visible, a)
		}
	}

	switch {
	case path == "oslogin/users" && q.Has("username"):
		for _, a := range visible {
			if a.username() == q.Get("username") {
				return http.StatusOK, one(a)
			}
		}
		return http.StatusNotFound, nil

	case path == "oslogin/users" && q.Has("uid"):
		uid, err := strconv.ParseInt(q.Get("uid"), 10, 64)
		if err != nil {
			return http.StatusBadRequest, nil
		}
		for _, a := range visible {
			if a.UID == uid {
				return http.StatusOK, one(a)
			}
		}
		return http.StatusNotFound, nil

	case path == "oslogin/users" && q.Has("groupname"):
		return e.groupUsersLocked(q)

	case path == "oslogin/groups":
		return e.groupsAnswerLocked(q)

	case path == "oslogin/users" && q.Has("pagesize"):
		// Page tokens are offsets. A page is never empty, and the list ends
		// with a separate {"nextPageToken":"0"} answer without profiles, as
		// the guest's NSS cache requires.
		size, err := strconv.Atoi(q.Get("pagesize"))
		offset := 0
		if t := q.Get("pagetoken"); t != "" && err == nil {
			offset, err = strconv.Atoi(t)
		}
		if err != nil || size <= 0 || offset < 0 {
			return http.StatusBadRequest, nil
		}
		if offset >= len(visible) {
			return http.StatusOK, guestUsersJSON{NextPageToken: "0"}
		}
		end := min(offset+size, len(visible))
		page := guestUsersJSON{NextPageToken: strconv.Itoa(end)}
		for _, a := range visible[offset:end] {
			page.LoginProfiles = append(page.LoginProfiles, a.profileJSON(e.cfg.ProjectID, unexpired))
		}
		return http.StatusOK, page

	case path == "oslogin/authorize":
		// email is the profile name users returned (the numeric id) or an e-mail.
		policy := q.Get("policy")
		if q.Get("email") == "" || (policy != "login" && policy != "adminLogin") {
			return http.StatusBadRequest, nil
		}
		a := e.lookupLocked(q.Get("email"))
		if a == nil {
			return http.StatusNotFound, nil
		}
		in := e.instanceLocked(vm.Zone, vm.ID)
		ok := in != nil && e.mayLoginLocked(a, in, policy == "adminLogin")
		if q.Has("fingerprint") { // a certificate login (principals command)
			ok = ok && e.certAuthorizesLocked(q.Get("fingerprint"), a, in)
		}
		return http.StatusOK, map[string]bool{"success": ok}

	case path == "oslogin/certificates":
		return http.StatusOK, trustedCAsJSON{TrustedCertificateAuthorities: []trustedCAJSON{{PublicKey: e.CAPublicKey()}}}

	case path == "oslogin/users":
		return http.StatusBadRequest, nil
	}
	return http.StatusNotFound, nil
}
