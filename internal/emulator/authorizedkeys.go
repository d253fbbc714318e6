package emulator

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Outcomes of AuthorizedKeys besides transport failures. Like the guest's
// google_authorized_keys, the command prints nothing in these cases.
var (
	ErrUnknownUser = errors.New("not an OS Login user")
	ErrLoginDenied = errors.New("OS Login denies login")
)

// AuthorizedKeysOptions configure AuthorizedKeys.
type AuthorizedKeysOptions struct {
	// MetadataHost is host:port of the metadata server (GCE_METADATA_HOST
	// syntax). Required: nothing is ever looked up at a built-in address.
	MetadataHost string
	// Instance is the VM the command runs on (name, id or zone/name), sent
	// as InstanceHeader; empty means the emulator's default instance.
	Instance string
	// Client defaults to one with the guest's 5 s per-attempt timeout and
	// no proxy.
	Client *http.Client
	// Retries are extra attempts on answers other than 200, 400 and 404;
	// 0 means the guest's 3, negative means none. Transport errors are not
	// retried, as with the guest's libcurl.
	Retries int
	// Backoff between attempts; 0 means the guest's 1 s.
	Backoff time.Duration
	// Now is the VM's clock for the expiry filter; nil means time.Now.
	Now func() time.Time
}

// AuthorizedKeys does what the guest's AuthorizedKeysCommand does for sshd:
// refuse on a VM that requires certificates (ErrCertificatesRequired),
// validate the username, look it up (oslogin/users?username=), ask
// oslogin/authorize with policy=login for the profile's name, and return the
// unexpired keys, each exactly as stored. It does not consult adminLogin,
// which on a VM only maintains a sudoers file.
func AuthorizedKeys(ctx context.Context, opts AuthorizedKeysOptions, username string) ([]string, error) {
	host := strings.TrimSuffix(strings.TrimPrefix(opts.MetadataHost, "http://"), "/")
	if host == "" {
		return nil, errors.New("authorized keys: no metadata host given")
	}
	if !usernameRE.MatchString(username) {
		return nil, fmt.Errorf("authorized keys: invalid username %q: %w", username, ErrUnknownUser)
	}
	switch certOnly, err := certificatesRequired(ctx, opts); {
	case err != nil:
		return nil, fmt.Errorf("authorized keys: %w", err)
	case certOnly:
		return nil, fmt.Errorf("authorized keys: %s: %w", username, ErrCertificatesRequired)
	}
	c := &mdsClient{base: "http://" + host + metadataPrefix + "oslogin/", opts: opts}
	if c.opts.Client == nil {
		c.opts.Client = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: nil}}
		defer c.opts.Client.CloseIdleConnections()
	}

	code, body, err := c.get(ctx, "users?username="+url.QueryEscape(username))
	switch {
	case err != nil:
		return nil, fmt.Errorf("authorized keys: look up %s: %w", username, err)
	case code == http.StatusNotFound || (code == http.StatusOK && len(body) == 0):
		return nil, fmt.Errorf("authorized keys: %s: %w", username, ErrUnknownUser)
	case code != http.StatusOK:
		return nil, fmt.Errorf("authorized keys: look up %s: HTTP %d", username, code)
	}
	name, ok := profileName(body)
	if !ok {
		return nil, fmt.Errorf("authorized keys: %s: no profile name: %w", username, ErrUnknownUser)
	}

	code, authz, err := c.get(ctx, "authorize?email="+url.QueryEscape(name)+"&policy=login")
	switch {
	case err != nil:
		return nil, fmt.Errorf("authorized keys: authorize %s: %w", username, err)
	case code != http.StatusOK:
		return nil, fmt.Errorf("authorized keys: authorize %s: HTTP %d: %w", username, code, ErrLoginDenied)
	}
	var verdict struct {
		Success bool `json:"success"`
	}
	if json.Unmarshal(authz, &verdict) != nil || !verdict.Success {
		return nil, fmt.Errorf("authorized keys: %s: %w", username, ErrLoginDenied)
	}
	now := time.Now
	if opts.Now != nil {
		now = opts.Now
	}
	return UnexpiredKeys(body, now()), nil
}

// mdsClient issues the guest's metadata requests with its retry rule.
type mdsClient struct {
	base string
	opts AuthorizedKeysOptions
}

func (c *mdsClient) get(ctx context.Context, rel string) (int, []byte, error) {
	retries, backoff := c.opts.Retries, c.opts.Backoff
	if retries == 0 {
		retries = 3
	}
	if backoff == 0 {
		backoff = time.Second
	}
	for attempt := 0; ; attempt++ {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+rel, nil)
		if err != nil {
			return 0, nil, fmt.Errorf("build request: %w", err)
		}
		req.Header.Set("Metadata-Flavor", "Google")
		if c.opts.Instance != "" {
			req.Header.Set(InstanceHeader, c.opts.Instance)
		}
		resp, err := c.opts.Client.Do(req)
		if err != nil {
			return 0, nil, err
		}
		body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		_ = resp.Body.Close() // fully read or abandoned; nothing to report
		if err != nil {
			return 0, nil, fmt.Errorf("read answer: %w", err)
		}
		switch resp.StatusCode {
		case http.StatusOK, http.StatusBadRequest, http.StatusNotFound:
			return resp.StatusCode, body, nil
		}
		if attempt >= retries {
			return resp.StatusCode, body, nil
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return 0, nil, ctx.Err()
		case <-t.C:
		}
	}
}

// firstProfile returns loginProfiles[0]: the guest reads no other.
func firstProfile(usersJSON []byte) (map[string]json.RawMessage, bool) {
	var root struct {
		LoginProfiles []map[string]json.RawMessage `json:"loginProfiles"`
	}
	if json.Unmarshal(usersJSON, &root) != nil || len(root.LoginProfiles) == 0 || root.LoginProfiles[0] == nil {
		return nil, false
	}
	return root.LoginProfiles[0], true
}

// profileName is loginProfiles[0].name, passed to authorize verbatim.
func profileName(usersJSON []byte) (string, bool) {
	p, ok := firstProfile(usersJSON)
	if !ok {
		return "", false
	}
	var name string
	if json.Unmarshal(p["name"], &name) != nil || name == "" {
		return "", false
	}
	return name, true
}

// UnexpiredKeys applies the guest's key filter (contract 7.4) to an
// oslogin/users answer: keys of loginProfiles[0].sshPublicKeys in document
// order; a value needs a string "key"; an expirationTimeUsec that is a JSON
// integer or string is parsed as int64 (0, "" or non-numeric therefore mean
// expired) and the key dropped when now is past it; a missing, float or
// boolean expiry keeps the key.
func UnexpiredKeys(usersJSON []byte, now time.Time) []string {
	p, ok := firstProfile(usersJSON)
	if !ok {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(p["sshPublicKeys"]))
	dec.UseNumber()
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil
	}
	nowUsec := now.UnixMicro()
	var keys []string
	for dec.More() {
		if _, err := dec.Token(); err != nil { // the fingerprint: not needed
			return keys
		}
		var v map[string]any
		if err := dec.Decode(&v); err != nil {
			if _, isSyntax := err.(*json.SyntaxError); isSyntax {
				return keys
			}
			continue // not an object: skipped, like the guest
		}
		key, ok := v["key"].(string)
		if !ok || key == "" || expired(v["expirationTimeUsec"], nowUsec) {
			continue
		}
		keys = append(keys, key)
	}
	return keys
}

func expired(v any, nowUsec int64) bool {
	var s string
	switch x := v.(type) {
	case json.Number:
		if strings.ContainsAny(string(x), ".eE") {
			return false // a float: the guest ignores it
		}
		s = string(x)
	case string:
		s = x
	default:
		return false
	}
	exp, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		exp = 0
	}
	return nowUsec > exp
}
