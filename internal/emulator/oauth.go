package emulator

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// jwtBearerGrant is RFC 7523's grant type, used by service-account key files.
const jwtBearerGrant = "urn:ietf:params:oauth:grant-type:jwt-bearer"

// Google's texts for refused assertions.
const (
	msgBadSignature = "Invalid JWT Signature."
	msgBadTime      = "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim."
	msgNoAccount    = "Invalid grant: account not found"
	msgBadScope     = "Invalid OAuth scope or ID token audience provided."
	msgUnauthClient = "Client is unauthorized to retrieve access tokens using this method, or client not authorized for any of the scopes requested."
)

// clockSkew is how far in the future an assertion's iat may lie.
const clockSkew = 5 * time.Minute

// ServiceAccountKeyJSON creates a new key for the service account email and
// returns its JSON key file, the kind GOOGLE_APPLICATION_CREDENTIALS names.
// The RSA key is generated now and lives only in this file and in the
// emulator's memory; tokenURI (base URL + "/token") is where clients will
// exchange the signed assertion for an access token.
func (e *Emulator) ServiceAccountKeyJSON(email, tokenURI string) ([]byte, error) {
	e.mu.Lock()
	a := e.lookupLocked(email)
	e.mu.Unlock()
	if a == nil {
		return nil, fmt.Errorf("service account key: unknown account %q", email)
	}
	if !a.ServiceAccount {
		return nil, fmt.Errorf("service account key: %s is not a service account", email)
	}
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, fmt.Errorf("service account key: generate: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, fmt.Errorf("service account key: encode: %w", err)
	}
	idBytes := make([]byte, 20)
	_, _ = rand.Read(idBytes) // crypto/rand.Read never fails
	keyID := hex.EncodeToString(idBytes)

	e.mu.Lock()
	a.saKeys[keyID] = &priv.PublicKey
	e.mu.Unlock()

	return json.MarshalIndent(map[string]string{
		"type":            "service_account",
		"project_id":      e.cfg.ProjectID,
		"private_key_id":  keyID,
		privateKeyField:   string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
		"client_email":    a.Email,
		"client_id":       a.UniqueID,
		"token_uri":       tokenURI,
		"universe_domain": "googleapis.com",
	}, "", "  ")
}

// privateKeyField names the key file's private key, generated at run time.
const privateKeyField = "private_key"

// oauthError is the token endpoint's error answer (RFC 6749 section 5.2).
func oauthError(w http.ResponseWriter, code int, kind, desc string) {
	writeJSON(w, code, map[string]string{"error": kind, "error_description": desc})
}

// serveToken implements the JWT-bearer grant of Google's token endpoint: the
// assertion must be an RS256 JWT signed with a key the emulator issued for
// iss, addressed to this endpoint, short-lived and current by the emulator
// clock, and carrying scopes.
func (e *Emulator) serveToken(w http.ResponseWriter, r *http.Request) {
	const id = "oauth2.token"
	e.count(id)
	if f, fired := e.fireFault(id, false, false); fired {
		w = e.withLatency(w, r, f)
		if !e.preFaults(w, r, f, func(code int) { oauthError(w, code, "internal_failure", http.StatusText(code)) }) {
			return
		}
	}
	if r.Method != http.MethodPost {
		oauthError(w, http.StatusMethodNotAllowed, "invalid_request", "Method not allowed; use POST.")
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxBody)
	if err := r.ParseForm(); err != nil {
		oauthError(w, http.StatusBadRequest, "invalid_request", "Malformed request body.")
		return
	}
	switch gt := r.PostForm.Get("grant_type"); gt {
	case jwtBearerGrant:
	case "refresh_token":
		e.serveRefreshGrant(w, r)
		return
	default:
		oauthError(w, http.StatusBadRequest, "unsupported_grant_type", "Invalid grant_type: "+gt)
		return
	}
	assertion := r.PostForm.Get("assertion")
	if assertion == "" {
		oauthError(w, http.StatusBadRequest, "invalid_request", "Missing required parameter: assertion")
		return
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	tok, exp, kind, desc := e.exchangeAssertion(assertion, scheme+"://"+r.Host+r.URL.Path)
	if tok == "" {
		e.log.Debug("token refused", "error", kind, "description", desc)
		oauthError(w, http.StatusBadRequest, kind, desc)
		return
	}
	w.Header().Set("Cache-Control", "no-cache, no-store, max-age=0, must-revalidate")
	writeJSON(w, http.StatusOK, tokenResponse(tok, exp, e.Now()))
}

type tokenJSON struct {
	AccessToken string `json:"access_token"`
	ExpiresIn   int64  `json:"expires_in"`
	TokenType   string `json:"token_type"`
}

// tokenResponse reports the remaining lifetime; never 0, which Go's
// metadata token source rejects.
func tokenResponse(tok string, exp, now time.Time) tokenJSON {
	return tokenJSON{AccessToken: tok, ExpiresIn: max(int64(exp.Sub(now)/time.Second), 1), TokenType: "Bearer"}
}

// exchangeAssertion verifies a JWT-bearer assertion and mints a token. On
// refusal tok is empty and kind/desc are the OAuth error.
func (e *Emulator) exchangeAssertion(assertion, audience string) (tok string, exp time.Time, kind, desc string) {
	parts := strings.Split(assertion, ".")
	if len(parts) != 3 {
		return "", exp, "invalid_grant", msgBadSignature
	}
	var header struct {
		Alg string `json:"alg"`
		Kid string `json:"kid"`
	}
	var claims struct {
		Iss   string `json:"iss"`
		Sub   string `json:"sub"`
		Aud   string `json:"aud"`
		Scope string `json:"scope"`
		Iat   int64  `json:"iat"`
		Exp   int64  `json:"exp"`
	}
	sig, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[2], "="))
	if err != nil || decodeSegment(parts[0], &header) != nil || decodeSegment(parts[1], &claims) != nil {
		return "", exp, "invalid_grant", msgBadSignature
	}
	if header.Alg != "RS256" {
		return "", exp, "invalid_grant", msgBadSignature
	}

	e.mu.Lock()
	defer e.mu.Unlock()
	a := e.lookupLocked(claims.Iss)
	if a == nil || !a.ServiceAccount || len(a.saKeys) == 0 {
		return "", exp, "invalid_grant", msgNoAccount
	}
	digest := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	verified := false
	for kid, pub := range a.saKeys {
		if (header.Kid == "" || header.Kid == kid) && rsa.VerifyPKCS1v15(pub, crypto.SHA256, digest[:], sig) == nil {
			verified = true
			break
		}
	}
	now := e.nowLocked()
	switch {
	case !verified:
		return "", exp, "invalid_grant", msgBadSignature
	case claims.Aud != audience:
		return "", exp, "invalid_grant", "Invalid JWT: Failed audience check. The expected audience is " + audience + "."
	case claims.Exp <= now.Unix() || claims.Iat > now.Add(clockSkew).Unix() ||
		claims.Exp <= claims.Iat || claims.Exp-claims.Iat > 3600:
		return "", exp, "invalid_grant", msgBadTime
	case claims.Sub != "" && claims.Sub != claims.Iss:
		return "", exp, "unauthorized_client", msgUnauthClient
	case strings.TrimSpace(claims.Scope) == "":
		return "", exp, "invalid_scope", msgBadScope
	}
	tok, exp = e.mintLocked(a, strings.Fields(claims.Scope))
	return tok, exp, "", ""
}

func decodeSegment(seg string, v any) error {
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(seg, "="))
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}
