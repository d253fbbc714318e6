package emulator

import (
	"crypto/rand"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strings"
	"time"
)

// accessToken is an OAuth access token the emulator issued. Only these are
// accepted by the API, so a test proves its client really fetched a token.
type accessToken struct {
	email  string
	scopes []string
	expiry time.Time
}

// mdsReuseMargin mirrors the metadata server's token cache: the same token is
// handed out until it has less than this much life left.
const mdsReuseMargin = 5 * time.Minute

// MintToken issues an access token for email carrying scopes (cloud-platform
// when none are given), as if the account had obtained it from Google.
func (e *Emulator) MintToken(email string, scopes ...string) (string, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	a := e.lookupLocked(email)
	if a == nil {
		return "", fmt.Errorf("mint token: unknown account %q", email)
	}
	tok, _ := e.mintLocked(a, scopes)
	return tok, nil
}

func (e *Emulator) mintLocked(a *account, scopes []string) (string, time.Time) {
	if len(scopes) == 0 {
		scopes = []string{ScopeCloudPlatform}
	}
	now := e.nowLocked()
	for t, at := range e.tokens { // drop dead tokens so long runs stay small
		if !now.Before(at.expiry) {
			delete(e.tokens, t)
		}
	}
	tok := "ya29.emulator." + rand.Text() + rand.Text()
	exp := now.Add(e.cfg.TokenLifetime)
	e.tokens[tok] = &accessToken{email: a.Email, scopes: slices.Clone(scopes), expiry: exp}
	return tok, exp
}

// metadataTokenLocked returns the attached account's token for scopes,
// reusing a cached one while it has enough life left, like the real server.
func (e *Emulator) metadataTokenLocked(a *account, scopes []string) (string, time.Time) {
	sorted := slices.Clone(scopes)
	sort.Strings(sorted)
	cacheKey := a.Email + "\x00" + strings.Join(sorted, " ")
	if tok, ok := e.mdsTokens[cacheKey]; ok {
		if at := e.tokens[tok]; at != nil && at.expiry.Sub(e.nowLocked()) >= mdsReuseMargin {
			return tok, at.expiry
		}
	}
	tok, exp := e.mintLocked(a, scopes)
	e.mdsTokens[cacheKey] = tok
	return tok, exp
}

// bearerLocked resolves the request's bearer token: 401 when it is missing,
// unknown or expired by the emulator clock.
func (e *Emulator) bearerLocked(r *http.Request) (*accessToken, *apiError) {
	h := r.Header.Get("Authorization")
	scheme, tok, _ := strings.Cut(h, " ")
	tok = strings.TrimSpace(tok)
	if !strings.EqualFold(scheme, "Bearer") || tok == "" {
		return nil, errUnauthenticated(true)
	}
	at := e.tokens[tok]
	if at == nil || !e.nowLocked().Before(at.expiry) {
		return nil, errUnauthenticated(false)
	}
	return at, nil
}

// hasScope reports whether the token allows the method: writes need
// cloud-platform or compute, reads also accept their read-only variants.
func (at *accessToken) hasScope(write bool) bool {
	for _, s := range at.scopes {
		switch s {
		case ScopeCloudPlatform, ScopeCompute:
			return true
		case ScopeCloudPlatformReadOnly, ScopeComputeReadOnly:
			if !write {
				return true
			}
		}
	}
	return false
}

// authorizeLocked applies Google's order of checks: credentials (401), then
// scopes (403 insufficientPermissions), then whether the caller may touch
// the user's profile (403 forbidden). Each identity manages only itself.
func (e *Emulator) authorizeLocked(r *http.Request, m apiMethod, user string) (*account, *apiError) {
	at, aerr := e.bearerLocked(r)
	if aerr != nil {
		return nil, aerr
	}
	if !at.hasScope(m.write) {
		return nil, errInsufficientScopes(m.id)
	}
	target := e.lookupLocked(user)
	if target == nil || !strings.EqualFold(target.Email, at.email) {
		return nil, errForbidden()
	}
	return target, nil
}
