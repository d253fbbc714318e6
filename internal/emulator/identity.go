package emulator

import (
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// ScopeUserinfoEmail lets a user token reveal its e-mail through tokeninfo,
// as the tokens of `gcloud auth application-default login` do.
const ScopeUserinfoEmail = "https://www.googleapis.com/auth/userinfo.email"

// UserCredentialsJSON returns an authorized_user credentials file for email,
// the kind `gcloud auth application-default login` writes: a refresh token
// the emulator's token endpoint at tokenURI exchanges for access tokens with
// the cloud-platform and userinfo.email scopes. The file names no account;
// clients learn it from tokeninfo.
func (e *Emulator) UserCredentialsJSON(email, tokenURI string) ([]byte, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	a := e.lookupLocked(email)
	if a == nil {
		return nil, fmt.Errorf("user credentials: unknown account %q", email)
	}
	rt := "1//emulator-refresh-" + rand.Text()
	e.refresh[rt] = a.Email
	return json.MarshalIndent(map[string]string{
		"type":             "authorized_user",
		"client_id":        "emulator-client.apps.googleusercontent.com",
		"client_secret":    "emulator-client-secret",
		"refresh_token":    rt,
		"token_uri":        tokenURI,
		"quota_project_id": e.cfg.ProjectID,
	}, "", "  ")
}

// serveRefreshGrant exchanges a refresh token from UserCredentialsJSON.
// The form has already been parsed by serveToken.
func (e *Emulator) serveRefreshGrant(w http.ResponseWriter, r *http.Request) {
	e.mu.Lock()
	email, ok := e.refresh[r.PostForm.Get("refresh_token")]
	var a *account
	if ok {
		a = e.lookupLocked(email)
	}
	if a == nil {
		e.mu.Unlock()
		oauthError(w, http.StatusBadRequest, "invalid_grant", "Bad Request")
		return
	}
	tok, exp := e.mintLocked(a, []string{ScopeCloudPlatform, ScopeUserinfoEmail, "openid"})
	now := e.nowLocked()
	e.mu.Unlock()
	w.Header().Set("Cache-Control", "no-cache, no-store, max-age=0, must-revalidate")
	writeJSON(w, http.StatusOK, tokenResponse(tok, exp, now))
}

// serveTokenInfo answers Google's tokeninfo endpoint for tokens the emulator
// issued: whose token, which scopes, how long it lives. The e-mail is only
// revealed with the userinfo.email scope, as Google does.
func (e *Emulator) serveTokenInfo(w http.ResponseWriter, r *http.Request) {
	e.count("oauth2.tokeninfo")
	r.Body = http.MaxBytesReader(w, r.Body, maxBody)
	if err := r.ParseForm(); err != nil {
		oauthError(w, http.StatusBadRequest, "invalid_request", "Malformed request.")
		return
	}
	tok := r.Form.Get("access_token")
	e.mu.Lock()
	at := e.tokens[tok]
	now := e.nowLocked()
	e.mu.Unlock()
	if at == nil || !now.Before(at.expiry) {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_token", "error_description": "Invalid Value"})
		return
	}
	info := map[string]string{
		"scope":      strings.Join(at.scopes, " "),
		"expires_in": strconv.FormatInt(int64(at.expiry.Sub(now)/time.Second), 10),
		"exp":        strconv.FormatInt(at.expiry.Unix(), 10),
		"aud":        "emulator-client.apps.googleusercontent.com",
		"azp":        "emulator-client.apps.googleusercontent.com",
	}
	if slices.Contains(at.scopes, ScopeUserinfoEmail) {
		info["email"] = at.email
		info["email_verified"] = "true"
	}
	writeJSON(w, http.StatusOK, info)
}

// serveGenerateAccessToken is the IAM Credentials API's
// projects.serviceAccounts.generateAccessToken: the caller's token buys a
// token for a service account that lists the caller among its
// TokenCreators (roles/iam.serviceAccountTokenCreator).
func (e *Emulator) serveGenerateAccessToken(w http.ResponseWriter, r *http.Request) {
	const id = "iamcredentials.generateAccessToken"
	e.count(id)
	rest := strings.TrimPrefix(r.URL.EscapedPath(), "/v1/projects/-/serviceAccounts/")
	target, verb, ok := strings.Cut(rest, ":")
	if r.Method != http.MethodPost || !ok || verb != "generateAccessToken" {
		errNotFound().write(w)
		return
	}
	var body struct {
		Scope    []string `json:"scope"`
		Lifetime string   `json:"lifetime"`
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxBody)
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil || len(body.Scope) == 0 {
		errInvalid("").write(w)
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	at, aerr := e.bearerLocked(r)
	if aerr != nil {
		aerr.write(w)
		return
	}
	sa := e.lookupLocked(target)
	if sa == nil || !sa.ServiceAccount {
		errNotFound().write(w)
		return
	}
	allowed := strings.EqualFold(at.email, sa.Email)
	for _, c := range sa.TokenCreators {
		allowed = allowed || strings.EqualFold(c, at.email)
	}
	if !allowed || !slices.Contains(at.scopes, ScopeCloudPlatform) {
		(&apiError{Code: 403, Status: "PERMISSION_DENIED", Reason: "forbidden",
			Message: "Permission 'iam.serviceAccounts.getAccessToken' denied on resource (or it may not exist)."}).write(w)
		return
	}
	tok, exp := e.mintLocked(sa, body.Scope)
	writeJSON(w, http.StatusOK, map[string]string{"accessToken": tok, "expireTime": exp.UTC().Format(time.RFC3339)})
}
