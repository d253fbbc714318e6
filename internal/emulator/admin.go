package emulator

import (
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"time"
)

// Admin API, under /emulator/v1/. It needs no credentials and therefore only
// answers loopback callers. Requests and answers are JSON; errors are
// {"error": "text"} with status 400 (bad input) or 404 (unknown account or
// group).
//
//	GET    /emulator/v1/state                    → State
//	GET    /emulator/v1/calls                    → {"users.importSshPublicKey": 2, ...}
//	DELETE /emulator/v1/calls                    → 204
//	GET    /emulator/v1/clock                    → {"now": RFC 3339}
//	POST   /emulator/v1/clock/advance {"by":"90s"} → {"now": RFC 3339}
//	GET    /emulator/v1/faults                   → [Fault]
//	POST   /emulator/v1/faults Fault             → [Fault]
//	DELETE /emulator/v1/faults                   → 204
//	PUT    /emulator/v1/quota {"writesPerMinute": 60} → same
//	GET    /emulator/v1/accounts                 → [Account]
//	POST   /emulator/v1/accounts Account         → 201 Account (derived fields filled)
//	GET    /emulator/v1/accounts/{email}/keys    → [Key]
//	PUT    /emulator/v1/accounts/{email}/grant {"login":true,"adminLogin":false} → Account
//	POST   /emulator/v1/accounts/{email}/token {"scopes":[...]} → {"access_token","expires_in","token_type"}
//	POST   /emulator/v1/accounts/{email}/key {"tokenUri": optional} → service-account JSON key file
//	GET    /emulator/v1/ca                       → {"publicKey": "ssh-ed25519 AAAA..."} (the OS Login CA)
//	GET    /emulator/v1/groups                   → [Group]
//	POST   /emulator/v1/groups Group             → 201 Group (members spelt as their accounts)
//	DELETE /emulator/v1/groups/{name}            → 204
//	PUT    /emulator/v1/groups/{name}/members {"members":["a@example.com"]} → Group
//
// Group JSON: {"name":"devs","gid":5001,"members":["a@example.com"]}; the
// rules are those of Config.Groups.
//
// Fault JSON: {"methods":"write","rate":0.5,"times":2,"status":429,
// "retryAfter":"10s","latency":"100ms","stall":"2s","drop":true,
// "blockKeyManagement":true}; durations are Go duration strings.
func (e *Emulator) adminRoutes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /emulator/v1/state", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, e.State())
	})
	mux.HandleFunc("GET /emulator/v1/calls", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, e.Calls())
	})
	mux.HandleFunc("DELETE /emulator/v1/calls", func(w http.ResponseWriter, r *http.Request) {
		e.ResetCalls()
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("GET /emulator/v1/clock", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, clockJSON{Now: e.Now()})
	})
	mux.HandleFunc("POST /emulator/v1/clock/advance", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			By string `json:"by"`
		}
		if !readAdmin(w, r, &req) {
			return
		}
		d, err := time.ParseDuration(req.By)
		if err != nil || d <= 0 {
			adminError(w, http.StatusBadRequest, "by must be a positive Go duration, e.g. \"90s\"")
			return
		}
		e.Advance(d)
		writeJSON(w, http.StatusOK, clockJSON{Now: e.Now()})
	})
	mux.HandleFunc("GET /emulator/v1/faults", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, nonNil(e.Faults()))
	})
	mux.HandleFunc("POST /emulator/v1/faults", func(w http.ResponseWriter, r *http.Request) {
		var f Fault
		if !readAdmin(w, r, &f) {
			return
		}
		if err := e.setFault(f); err != nil {
			adminError(w, http.StatusBadRequest, err.Error())
			return
		}
		writeJSON(w, http.StatusOK, nonNil(e.Faults()))
	})
	mux.HandleFunc("DELETE /emulator/v1/faults", func(w http.ResponseWriter, r *http.Request) {
		e.ClearFaults()
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("PUT /emulator/v1/quota", func(w http.ResponseWriter, r *http.Request) {
		var req quotaJSON
		if !readAdmin(w, r, &req) {
			return
		}
		if req.WritesPerMinute < 0 {
			adminError(w, http.StatusBadRequest, "writesPerMinute must not be negative")
			return
		}
		e.SetWriteQuota(req.WritesPerMinute)
		writeJSON(w, http.StatusOK, req)
	})
	mux.HandleFunc("GET /emulator/v1/ca", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, trustedCAJSON{PublicKey: e.CAPublicKey()})
	})
	mux.HandleFunc("GET /emulator/v1/accounts", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, e.Accounts())
	})
	mux.HandleFunc("POST /emulator/v1/accounts", func(w http.ResponseWriter, r *http.Request) {
		var a Account
		if !readAdmin(w, r, &a) {
			return
		}
		n, err := e.AddAccountNormalized(a)
		if err != nil {
			adminError(w, http.StatusBadRequest, err.Error())
			return
		}
		writeJSON(w, http.StatusCreated, n)
	})
	mux.HandleFunc("GET /emulator/v1/accounts/{email}/keys", func(w http.ResponseWriter, r *http.Request) {
		a, ok := e.adminAccount(w, r)
		if ok {
			writeJSON(w, http.StatusOK, nonNil(e.Keys(a.Email)))
		}
	})
	mux.HandleFunc("PUT /emulator/v1/accounts/{email}/grant", func(w http.ResponseWriter, r *http.Request) {
		var req grantJSON
		a, ok := e.adminAccount(w, r)
		if !ok || !readAdmin(w, r, &req) {
			return
		}
		if err := e.SetGrant(a.Email, req.Login, req.AdminLogin); err != nil {
			adminError(w, http.StatusNotFound, err.Error())
			return
		}
		a, _ = e.adminAccount(w, r)
		writeJSON(w, http.StatusOK, a)
	})
	mux.HandleFunc("POST /emulator/v1/accounts/{email}/token", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Scopes []string `json:"scopes"`
		}
		a, ok := e.adminAccount(w, r)
		if !ok || !readAdmin(w, r, &req) {
			return
		}
		e.mu.Lock()
		tok, exp := e.mintLocked(e.lookupLocked(a.Email), req.Scopes)
		now := e.nowLocked()
		e.mu.Unlock()
		writeJSON(w, http.StatusOK, tokenResponse(tok, exp, now))
	})
	mux.HandleFunc("POST /emulator/v1/accounts/{email}/key", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			TokenURI string `json:"tokenUri"`
		}
		a, ok := e.adminAccount(w, r)
		if !ok || !readAdmin(w, r, &req) {
			return
		}
		if req.TokenURI == "" {
			req.TokenURI = "http://" + r.Host + "/token"
		}
		b, err := e.ServiceAccountKeyJSON(a.Email, req.TokenURI)
		if err != nil {
			adminError(w, http.StatusBadRequest, err.Error())
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(b) // a vanished client cannot be told anything
	})
	e.instanceAdminRoutes(mux)
	e.relayAdminRoutes(mux)
	mux.HandleFunc("GET /emulator/v1/groups", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, nonNil(e.Groups()))
	})
	mux.HandleFunc("POST /emulator/v1/groups", func(w http.ResponseWriter, r *http.Request) {
		var g Group
		if !readAdmin(w, r, &g) {
			return
		}
		n, err := e.AddGroup(g)
		if err != nil {
			adminError(w, http.StatusBadRequest, err.Error())
			return
		}
		writeJSON(w, http.StatusCreated, n)
	})
	mux.HandleFunc("DELETE /emulator/v1/groups/{name}", func(w http.ResponseWriter, r *http.Request) {
		if err := e.DeleteGroup(r.PathValue("name")); err != nil {
			adminError(w, http.StatusNotFound, err.Error())
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("PUT /emulator/v1/groups/{name}/members", func(w http.ResponseWriter, r *http.Request) {
		var req groupMembersJSON
		if !readAdmin(w, r, &req) {
			return
		}
		g, err := e.SetGroupMembers(r.PathValue("name"), req.Members)
		switch {
		case errors.Is(err, errUnknownGroup):
			adminError(w, http.StatusNotFound, err.Error())
		case err != nil:
			adminError(w, http.StatusBadRequest, err.Error())
		default:
			writeJSON(w, http.StatusOK, g)
		}
	})
	return mux
}

type groupMembersJSON struct {
	Members []string `json:"members"`
}

type clockJSON struct {
	Now time.Time `json:"now"`
}

type quotaJSON struct {
	WritesPerMinute int `json:"writesPerMinute"`
}

type grantJSON struct {
	Login      bool `json:"login"`
	AdminLogin bool `json:"adminLogin"`
}

// adminAccount resolves the {email} path value or answers 404.
func (e *Emulator) adminAccount(w http.ResponseWriter, r *http.Request) (Account, bool) {
	e.mu.Lock()
	a := e.lookupLocked(r.PathValue("email"))
	e.mu.Unlock()
	if a == nil {
		adminError(w, http.StatusNotFound, "unknown account "+r.PathValue("email"))
		return Account{}, false
	}
	return a.Account, true
}

// readAdmin decodes an optional JSON body, strictly, or answers 400.
func readAdmin(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil && !errors.Is(err, io.EOF) {
		adminError(w, http.StatusBadRequest, "invalid JSON body: "+err.Error())
		return false
	}
	return true
}

func adminError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"error": msg})
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// loopbackOnly refuses the admin API to anyone but local callers, since it
// hands out tokens and keys without asking for credentials.
func loopbackOnly(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, err := net.SplitHostPort(r.RemoteAddr)
		ip := net.ParseIP(host)
		if err != nil || ip == nil || !ip.IsLoopback() {
			adminError(w, http.StatusForbidden, "the admin API only answers loopback clients")
			return
		}
		next.ServeHTTP(w, r)
	})
}
