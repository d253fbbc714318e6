package emulator

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/oslogin-agent/oslogin-agent/internal/emulator/iaprelay"
)

// AdminClient drives the admin API of an emulator running elsewhere (another
// process, a container), for tests and scripts that cannot hold *Emulator.
type AdminClient struct {
	BaseURL    string       // e.g. "http://127.0.0.1:41234"
	HTTPClient *http.Client // nil: a client without proxy and a 10 s timeout
}

// NewAdminClient returns a client for the emulator at baseURL, or at
// host:port as printed by the binary (export OSLOGIN_EMULATOR_HOST=host:port).
func NewAdminClient(baseURL string) *AdminClient {
	if !strings.Contains(baseURL, "://") {
		baseURL = "http://" + baseURL
	}
	return &AdminClient{BaseURL: strings.TrimSuffix(baseURL, "/")}
}

func (c *AdminClient) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("admin %s %s: encode: %w", method, path, err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.BaseURL+"/emulator/v1/"+path, body)
	if err != nil {
		return fmt.Errorf("admin %s %s: %w", method, path, err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	hc := c.HTTPClient
	if hc == nil {
		hc = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: nil}}
		defer hc.CloseIdleConnections()
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("admin %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return fmt.Errorf("admin %s %s: read: %w", method, path, err)
	}
	if resp.StatusCode >= 300 {
		var e struct {
			Error string `json:"error"`
		}
		_ = json.Unmarshal(raw, &e) // best effort: the status says enough otherwise
		return fmt.Errorf("admin %s %s: HTTP %d: %s", method, path, resp.StatusCode, e.Error)
	}
	switch o := out.(type) {
	case nil:
		return nil
	case *[]byte:
		*o = raw
		return nil
	default:
		if err := json.Unmarshal(raw, out); err != nil {
			return fmt.Errorf("admin %s %s: decode: %w", method, path, err)
		}
		return nil
	}
}

func accountPath(email, rest string) string { return "accounts/" + url.PathEscape(email) + "/" + rest }

func groupPath(name string) string { return "groups/" + url.PathEscape(name) }

// State returns every account with its POSIX accounts and keys.
func (c *AdminClient) State(ctx context.Context) (State, error) {
	var s State
	return s, c.do(ctx, http.MethodGet, "state", nil, &s)
}

// Calls returns the call counts by method id.
func (c *AdminClient) Calls(ctx context.Context) (map[string]int, error) {
	m := map[string]int{}
	return m, c.do(ctx, http.MethodGet, "calls", nil, &m)
}

// ResetCalls zeroes the call counts.
func (c *AdminClient) ResetCalls(ctx context.Context) error {
	return c.do(ctx, http.MethodDelete, "calls", nil, nil)
}

// Now returns the emulator's clock.
func (c *AdminClient) Now(ctx context.Context) (time.Time, error) {
	var r clockJSON
	return r.Now, c.do(ctx, http.MethodGet, "clock", nil, &r)
}

// Advance moves the emulator's clock forward and returns the new time.
func (c *AdminClient) Advance(ctx context.Context, d time.Duration) (time.Time, error) {
	var r clockJSON
	return r.Now, c.do(ctx, http.MethodPost, "clock/advance", map[string]string{"by": d.String()}, &r)
}

// SetFault installs a fault (replacing one with the same selector).
func (c *AdminClient) SetFault(ctx context.Context, f Fault) error {
	return c.do(ctx, http.MethodPost, "faults", f, nil)
}

// Faults lists the installed faults.
func (c *AdminClient) Faults(ctx context.Context) ([]Fault, error) {
	var fs []Fault
	return fs, c.do(ctx, http.MethodGet, "faults", nil, &fs)
}

// ClearFaults removes every fault.
func (c *AdminClient) ClearFaults(ctx context.Context) error {
	return c.do(ctx, http.MethodDelete, "faults", nil, nil)
}

// SetWriteQuota sets the per-user writes per minute; 0 turns it off.
func (c *AdminClient) SetWriteQuota(ctx context.Context, perMinute int) error {
	return c.do(ctx, http.MethodPut, "quota", quotaJSON{WritesPerMinute: perMinute}, nil)
}

// Accounts lists the accounts with their derived fields.
func (c *AdminClient) Accounts(ctx context.Context) ([]Account, error) {
	var as []Account
	return as, c.do(ctx, http.MethodGet, "accounts", nil, &as)
}

// AddAccount adds an account and returns it with derived fields filled.
func (c *AdminClient) AddAccount(ctx context.Context, a Account) (Account, error) {
	var out Account
	return out, c.do(ctx, http.MethodPost, "accounts", a, &out)
}

// Keys returns the stored keys of email.
func (c *AdminClient) Keys(ctx context.Context, email string) ([]Key, error) {
	var ks []Key
	return ks, c.do(ctx, http.MethodGet, accountPath(email, "keys"), nil, &ks)
}

// SetGrant sets the login and adminLogin permissions of email.
func (c *AdminClient) SetGrant(ctx context.Context, email string, login, adminLogin bool) error {
	return c.do(ctx, http.MethodPut, accountPath(email, "grant"), grantJSON{Login: login, AdminLogin: adminLogin}, nil)
}

// MintToken issues an access token for email with scopes (default
// cloud-platform).
func (c *AdminClient) MintToken(ctx context.Context, email string, scopes ...string) (string, error) {
	var t tokenJSON
	err := c.do(ctx, http.MethodPost, accountPath(email, "token"), map[string][]string{"scopes": scopes}, &t)
	return t.AccessToken, err
}

// ServiceAccountKeyJSON creates a key for the service account and returns
// its JSON key file; tokenURI "" means the emulator's own /token.
func (c *AdminClient) ServiceAccountKeyJSON(ctx context.Context, email, tokenURI string) ([]byte, error) {
	var b []byte
	return b, c.do(ctx, http.MethodPost, accountPath(email, "key"), map[string]string{"tokenUri": tokenURI}, &b)
}

func instancePath(zone, ref, rest string) string {
	p := "instances/" + url.PathEscape(ref)
	if rest != "" {
		p += "/" + rest
	}
	if zone != "" {
		p += "?zone=" + url.QueryEscape(zone)
	}
	return p
}

// Instances lists the instances with their guest attributes.
func (c *AdminClient) Instances(ctx context.Context) ([]InstanceState, error) {
	var out []InstanceState
	return out, c.do(ctx, http.MethodGet, "instances", nil, &out)
}

// Instance returns one instance by name or id; zone "" searches all zones.
func (c *AdminClient) Instance(ctx context.Context, zone, ref string) (InstanceState, error) {
	var out InstanceState
	return out, c.do(ctx, http.MethodGet, instancePath(zone, ref, ""), nil, &out)
}

// PutInstance creates or replaces an instance and returns it normalised.
func (c *AdminClient) PutInstance(ctx context.Context, in Instance) (Instance, error) {
	var out Instance
	return out, c.do(ctx, http.MethodPut, "instances", in, &out)
}

// RemoveInstance deletes an instance.
func (c *AdminClient) RemoveInstance(ctx context.Context, zone, ref string) error {
	return c.do(ctx, http.MethodDelete, instancePath(zone, ref, ""), nil, nil)
}

// SetInstanceGrant replaces email's roles on one instance.
func (c *AdminClient) SetInstanceGrant(ctx context.Context, zone, ref, email string, g InstanceGrant) error {
	return c.do(ctx, http.MethodPut, instancePath(zone, ref, "grants/"+url.PathEscape(email)), g, nil)
}

// SetInstanceMetadata sets one instance metadata item.
func (c *AdminClient) SetInstanceMetadata(ctx context.Context, zone, ref, key, value string) error {
	return c.do(ctx, http.MethodPut, instancePath(zone, ref, "metadata/"+url.PathEscape(key)), metadataValueJSON{Value: value}, nil)
}

// SetProjectMetadata sets one commonInstanceMetadata item.
func (c *AdminClient) SetProjectMetadata(ctx context.Context, key, value string) error {
	return c.do(ctx, http.MethodPut, "project/metadata/"+url.PathEscape(key), metadataValueJSON{Value: value}, nil)
}

// SetProjectRoles grants or revokes project-level roles (nil: unchanged).
func (c *AdminClient) SetProjectRoles(ctx context.Context, email string, r ProjectRoles) error {
	return c.do(ctx, http.MethodPut, accountPath(email, "roles"), r, nil)
}

// Groups lists the POSIX groups.
func (c *AdminClient) Groups(ctx context.Context) ([]Group, error) {
	var gs []Group
	return gs, c.do(ctx, http.MethodGet, "groups", nil, &gs)
}

// AddGroup creates a POSIX group and returns it as stored.
func (c *AdminClient) AddGroup(ctx context.Context, g Group) (Group, error) {
	var out Group
	return out, c.do(ctx, http.MethodPost, "groups", g, &out)
}

// DeleteGroup removes the POSIX group name.
func (c *AdminClient) DeleteGroup(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodDelete, groupPath(name), nil, nil)
}

// SetGroupMembers replaces the members of group name by the accounts with
// the given e-mails and returns the group as stored.
func (c *AdminClient) SetGroupMembers(ctx context.Context, name string, emails []string) (Group, error) {
	var out Group
	return out, c.do(ctx, http.MethodPut, groupPath(name)+"/members", groupMembersJSON{Members: nonNil(emails)}, &out)
}

// RelayStats returns the IAP relay's counters.
func (c *AdminClient) RelayStats(ctx context.Context) (iaprelay.Stats, error) {
	var s iaprelay.Stats
	return s, c.do(ctx, http.MethodGet, "relay/stats", nil, &s)
}

// SetRelayFault installs a relay fault.
func (c *AdminClient) SetRelayFault(ctx context.Context, f iaprelay.Fault) error {
	return c.do(ctx, http.MethodPost, "relay/faults", f, nil)
}

// ClearRelayFaults removes every relay fault.
func (c *AdminClient) ClearRelayFaults(ctx context.Context) error {
	return c.do(ctx, http.MethodDelete, "relay/faults", nil, nil)
}
