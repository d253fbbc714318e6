package oslogin

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// The OS Login API v1 methods the client calls, by hand over net/http and
// encoding/json. They send what google.golang.org/api/oslogin/v1 sent
// (paths, query, bodies; rest_test.go compares the two on the wire), and
// the agent binary does without that client's dependency tree (gRPC,
// protobuf, OpenTelemetry, cloud.google.com/go/auth), which was most of
// its idle memory.

// maxAnswer bounds what is read of one answer. A login profile holds at
// most 32 KiB of keys; anything near this is not OS Login talking.
const maxAnswer = 4 << 20

// Wire shapes: only the fields the client sends or reads. int64 fields
// travel as JSON strings, as the generated client sends them; zero values
// are left out (omitempty), so a key without expiry is sent as {"key":…}.
type (
	sshPublicKey struct {
		ExpirationTimeUsec int64  `json:"expirationTimeUsec,omitempty,string"`
		Fingerprint        string `json:"fingerprint,omitempty"`
		Key                string `json:"key,omitempty"`
		Name               string `json:"name,omitempty"`
	}
	posixAccount struct {
		AccountID           string `json:"accountId,omitempty"`
		OperatingSystemType string `json:"operatingSystemType,omitempty"`
		Primary             bool   `json:"primary,omitempty"`
		Username            string `json:"username,omitempty"`
	}
	loginProfile struct {
		Name          string                  `json:"name,omitempty"`
		PosixAccounts []*posixAccount         `json:"posixAccounts,omitempty"`
		SSHPublicKeys map[string]sshPublicKey `json:"sshPublicKeys,omitempty"`
	}
	importSSHPublicKeyResponse struct {
		Details      string        `json:"details,omitempty"`
		LoginProfile *loginProfile `json:"loginProfile,omitempty"`
	}
	provisionPosixAccountRequest struct {
		Regions []string `json:"regions,omitempty"`
	}
	signSSHPublicKeyRequest struct {
		AppEngineInstance string `json:"appEngineInstance,omitempty"`
		CloudRunResource  string `json:"cloudRunResource,omitempty"`
		ComputeInstance   string `json:"computeInstance,omitempty"`
		ServiceAccount    string `json:"serviceAccount,omitempty"`
		SSHPublicKey      string `json:"sshPublicKey,omitempty"`
	}
	signSSHPublicKeyResponse struct {
		SignedSSHPublicKey string `json:"signedSshPublicKey,omitempty"`
	}
	// empty is google.protobuf.Empty, and the answers whose content the
	// client does not use: they must still be a JSON object.
	empty struct{}
)

// restClient calls OS Login through an authenticated HTTP client.
type restClient struct {
	hc   *http.Client
	base *url.URL // the API's base URL, path ending in "/"
}

func newRESTClient(hc *http.Client, endpoint string) (*restClient, error) {
	if endpoint == "" {
		endpoint = DefaultOSLoginURL
	}
	base, err := url.Parse(strings.TrimSuffix(endpoint, "/") + "/")
	if err != nil {
		return nil, fmt.Errorf("OS Login endpoint %q is not a URL", endpoint)
	}
	return &restClient{hc: hc, base: base}, nil
}

// importSSHPublicKey is users.importSshPublicKey.
func (r *restClient) importSSHPublicKey(ctx context.Context, parent string, key *sshPublicKey, project string, regions []string) (*importSSHPublicKeyResponse, error) {
	q := url.Values{"projectId": {project}}
	if len(regions) > 0 {
		q["regions"] = regions
	}
	var out importSSHPublicKeyResponse
	if err := r.do(ctx, http.MethodPost, parent, ":importSshPublicKey", q, key, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// patchSSHPublicKey is users.sshPublicKeys.patch.
func (r *restClient) patchSSHPublicKey(ctx context.Context, name string, key *sshPublicKey, updateMask string) error {
	return r.do(ctx, http.MethodPatch, name, "", url.Values{"updateMask": {updateMask}}, key, &sshPublicKey{})
}

// deleteSSHPublicKey is users.sshPublicKeys.delete.
func (r *restClient) deleteSSHPublicKey(ctx context.Context, name string) error {
	return r.do(ctx, http.MethodDelete, name, "", nil, nil, &empty{})
}

// getLoginProfile is users.getLoginProfile.
func (r *restClient) getLoginProfile(ctx context.Context, name, project string) (*loginProfile, error) {
	var out loginProfile
	if err := r.do(ctx, http.MethodGet, name, "/loginProfile", url.Values{"projectId": {project}}, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// provisionPosixAccount is users.projects.provisionPosixAccount.
func (r *restClient) provisionPosixAccount(ctx context.Context, name string, req *provisionPosixAccountRequest) error {
	return r.do(ctx, http.MethodPost, name, "", nil, req, &empty{})
}

// signSSHPublicKey is projects.locations.signSshPublicKey.
func (r *restClient) signSSHPublicKey(ctx context.Context, parent string, req *signSSHPublicKeyRequest) (*signSSHPublicKeyResponse, error) {
	var out signSSHPublicKeyResponse
	if err := r.do(ctx, http.MethodPost, parent, ":signSshPublicKey", nil, req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// do makes one call: method on "v1/" + name + suffix, with q and the JSON
// of in as the body, and decodes a 2xx answer into out. Any other answer
// is an *apiError. A transport failure is returned as net/http reports it
// (a *url.Error), except that once ctx has ended it is ctx's error, as the
// generated client did.
func (r *restClient) do(ctx context.Context, method, name, suffix string, q url.Values, in, out any) error {
	var body io.Reader
	if in != nil {
		// An Encoder, as the generated client: its output ends in a newline.
		var buf bytes.Buffer
		if err := json.NewEncoder(&buf).Encode(in); err != nil {
			return fmt.Errorf("encode the request: %w", err)
		}
		body = &buf
	}
	if q == nil {
		q = url.Values{}
	}
	q.Set("alt", "json")
	q.Set("prettyPrint", "false")
	u := *r.base
	u.Path = r.base.Path + "v1/" + name + suffix
	u.RawPath = r.base.EscapedPath() + "v1/" + escapeReserved(name) + suffix
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return fmt.Errorf("build the request: %w", err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := r.hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return err
	}
	defer resp.Body.Close()
	b, rerr := io.ReadAll(io.LimitReader(resp.Body, maxAnswer+1))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		// What could be read: the status alone still says what happened.
		return newAPIError(resp, b[:min(len(b), maxAnswer)], rerr == nil)
	}
	if rerr != nil {
		return fmt.Errorf("read OS Login's answer: %w", rerr)
	}
	if len(b) > maxAnswer {
		return fmt.Errorf("OS Login's answer is larger than %d MiB", maxAnswer>>20)
	}
	if resp.StatusCode == http.StatusNoContent {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("OS Login's answer is not the JSON expected: %w", err)
	}
	return nil
}

// escapeReserved percent-encodes s as RFC 6570 reserved expansion ({+name})
// does, which is how the generated client put resource names in paths:
// letters, digits and -._~:/?#[]@!$&'()*+,;= stay as they are, so an
// e-mail travels unescaped; every other byte becomes %XX.
func escapeReserved(s string) string {
	const keep = "-._~:/?#[]@!$&'()*+,;="
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte(keep, c) >= 0 {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&15])
	}
	return b.String()
}
