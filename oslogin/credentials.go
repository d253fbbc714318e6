package oslogin

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"syscall"

	"cloud.google.com/go/compute/metadata"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/google"
)

// Scope is the OAuth scope requested for every token. OS Login accepts writes
// with cloud-platform or compute; cloud-platform is what gcloud and most
// service-account setups already grant.
const Scope = "https://www.googleapis.com/auth/cloud-platform"

// DefaultTokenInfoURL answers "whose token is this?" for user credentials,
// whose JSON does not name the account.
const DefaultTokenInfoURL = "https://oauth2.googleapis.com/tokeninfo"

// Identity is who the agent acts as: the account whose OS Login profile holds
// the keys, the project whose POSIX account supplies the username, and the
// token source that proves it.
type Identity struct {
	Account     string
	Project     string
	TokenSource oauth2.TokenSource
	// Source says in words where the credentials came from, for the startup
	// log line and for error messages.
	Source string
}

// IdentityOptions override what the credentials would say.
type IdentityOptions struct {
	Account string // e-mail; empty means: as the credentials say
	Project string // project ID; empty means: as the credentials or the metadata server say
	// TokenInfoURL is asked for the e-mail of user (authorized_user)
	// credentials; empty means DefaultTokenInfoURL.
	TokenInfoURL string
	// HTTPClient is used for every token and token-info request; nil means
	// a client with a short timeout. Pass Endpoints.HTTPClient so that
	// OSLOGIN_EMULATOR_HOST keeps them on loopback.
	HTTPClient *http.Client
}

// FindIdentity discovers Application Default Credentials in their usual order
// (GOOGLE_APPLICATION_CREDENTIALS, gcloud's well-known file, the metadata
// server) and works out the account e-mail and project they stand for.
func FindIdentity(ctx context.Context, opts IdentityOptions) (*Identity, error) {
	if opts.Account != "" {
		if err := checkAccount(opts.Account); err != nil {
			return nil, err
		}
	}
	// The token source keeps the context it is built with for every later
	// refresh, so it gets one that outlives the caller's start-up deadline,
	// with an HTTP client that cannot hang.
	if opts.HTTPClient == nil {
		opts.HTTPClient = &http.Client{Timeout: defaultCallTimeout}
	}
	tokenCtx := context.WithValue(context.WithoutCancel(ctx), oauth2.HTTPClient, opts.HTTPClient)
	creds, source, err := findCredentials(tokenCtx)
	if err != nil {
		return nil, err
	}
	ts := &freshSource{cur: creds.TokenSource, build: func() (oauth2.TokenSource, error) {
		return google.ComputeTokenSource("", Scope), nil
	}}
	if creds.JSON != nil {
		b := creds.JSON
		ts.build = func() (oauth2.TokenSource, error) {
			c, err := credentialsFromJSON(tokenCtx, b, google.CredentialsParams{Scopes: []string{Scope}})
			if err != nil {
				return nil, err
			}
			return c.TokenSource, nil
		}
	}
	id := &Identity{Account: opts.Account, Project: opts.Project, TokenSource: ts, Source: source}
	if id.Project == "" {
		id.Project = creds.ProjectID
	}
	if id.Project == "" && creds.JSON != nil {
		id.Project = quotaProject(creds.JSON)
	}
	if creds.JSON != nil && id.Account == "" {
		if id.Account, err = accountFromJSON(ctx, creds, opts); err != nil {
			return nil, err
		}
	}
	// Fetch the first token now: broken credentials (a bad private key, an
	// unreachable token endpoint, a refused impersonation) are reported as
	// such, not as a failed OS Login call later. The token is cached for
	// that first call.
	if err := checkServiceAccountFile(creds.JSON); err != nil {
		return nil, fmt.Errorf("the %s is broken: %w; nothing was sent to Google. Create a new key for the "+
			"service account, or better, use workload identity federation", source, err)
	}
	if _, err := creds.TokenSource.Token(); err != nil {
		return nil, tokenError(source, err)
	}
	if creds.JSON == nil { // the metadata server: the VM's attached service account
		if id.Account == "" {
			if id.Account, err = metadata.EmailWithContext(ctx, "default"); err != nil {
				return nil, fmt.Errorf("ask the metadata server for the service account e-mail: %w", err)
			}
		}
		if id.Project == "" {
			if id.Project, err = metadata.ProjectIDWithContext(ctx); err != nil {
				return nil, fmt.Errorf("ask the metadata server for the project: %w", err)
			}
		}
	}
	if id.Account == "" {
		return nil, fmt.Errorf("the credentials (%s) do not name an account; pass --account EMAIL", source)
	}
	if err := checkAccount(id.Account); err != nil {
		return nil, err
	}
	if id.Project == "" {
		return nil, fmt.Errorf("the credentials (%s) do not name a project; pass --project PROJECT_ID", source)
	}
	return id, nil
}

// checkServiceAccountFile checks locally what x/oauth2 would only report
// as a failed token request: a service-account key file must name its
// account and hold a PEM private key in PKCS #8 or PKCS #1 form.
func checkServiceAccountFile(b []byte) error {
	var f struct {
		Type        string `json:"type"`
		ClientEmail string `json:"client_email"`
		PrivateKey  string `json:"private_key"`
	}
	if b == nil || json.Unmarshal(b, &f) != nil || f.Type != "service_account" {
		return nil
	}
	if f.ClientEmail == "" {
		return errors.New("it has no client_email")
	}
	if f.PrivateKey == "" {
		return errors.New("it has no private_key")
	}
	block, _ := pem.Decode([]byte(f.PrivateKey))
	if block == nil {
		return errors.New("its private_key is not PEM-encoded")
	}
	if _, err := x509.ParsePKCS8PrivateKey(block.Bytes); err == nil {
		return nil
	}
	if _, err := x509.ParsePKCS1PrivateKey(block.Bytes); err == nil {
		return nil
	}
	return errors.New("its private_key cannot be parsed (neither PKCS #8 nor PKCS #1)")
}

// tokenError says who failed a token request: the token service refusing
// the credentials, the network, or the emulator guard. x/oauth2 flattens
// transport errors into text, so the guard is recognised by its text.
func tokenError(source string, err error) error {
	var rerr *oauth2.RetrieveError
	msg := err.Error()
	switch {
	case errors.As(err, &rerr):
		reason := rerr.ErrorDescription
		if reason == "" {
			reason = rerr.ErrorCode
		}
		if reason == "" { // the JWT flow leaves Google's JSON unparsed
			var body struct {
				Error       string `json:"error"`
				Description string `json:"error_description"`
			}
			if json.Unmarshal(rerr.Body, &body) == nil {
				reason = strings.TrimSpace(body.Error + ": " + body.Description)
				reason = strings.Trim(reason, ": ")
			}
		}
		if reason == "" && rerr.Response != nil {
			reason = rerr.Response.Status
		}
		return fmt.Errorf("the token service refused the %s (a revoked or deleted key, a disabled account, "+
			"or a refused impersonation); its reason: %s", source, oneLine(reason))
	case strings.Contains(msg, ErrNotLoopback.Error()):
		i := strings.Index(msg, ErrNotLoopback.Error()) + len(ErrNotLoopback.Error())
		return fmt.Errorf("get a token with the %s: %w%s; use the emulator's credentials (its metadata server, "+
			"or a key file from oslogin-emulator --write-key-file)", source, ErrNotLoopback, msg[i:])
	}
	var uerr *url.Error
	if errors.As(err, &uerr) {
		return fmt.Errorf("get a token with the %s: %w", source, plain(err))
	}
	return fmt.Errorf("get a token with the %s: %s", source, stripURLs(msg))
}

// stripURLs removes the `Post "https://…":` that x/oauth2 puts into
// transport errors it flattens into text.
func stripURLs(msg string) string {
	for _, verb := range []string{"Get ", "Post "} {
		for {
			i := strings.Index(msg, verb+`"`)
			if i < 0 {
				break
			}
			j := strings.Index(msg[i+len(verb)+1:], `": `)
			if j < 0 {
				break
			}
			raw := msg[i+len(verb)+1 : i+len(verb)+1+j]
			host := raw
			if u, err := url.Parse(raw); err == nil && u.Host != "" {
				host = u.Host
			}
			msg = msg[:i] + "cannot reach " + host + ": " + msg[i+len(verb)+1+j+3:]
		}
	}
	return msg
}

// checkAccount rejects values that cannot be an OS Login user id: the e-mail
// travels unescaped in the request path, so a slash would change the path.
func checkAccount(account string) error {
	if !strings.Contains(account, "@") || strings.ContainsAny(account, "/ \t\n") {
		return fmt.Errorf("%q is not an account e-mail (want e.g. deployer@my-project.iam.gserviceaccount.com)", account)
	}
	return nil
}

// findCredentials reads GOOGLE_APPLICATION_CREDENTIALS itself, so that a
// missing, unreadable or malformed file gets an error that says which and
// what to do, and leaves the rest of the search to x/oauth2.
func findCredentials(ctx context.Context) (*google.Credentials, string, error) {
	params := google.CredentialsParams{Scopes: []string{Scope}}
	if path := os.Getenv("GOOGLE_APPLICATION_CREDENTIALS"); path != "" {
		b, err := readCredentialsFile(path)
		if err != nil {
			return nil, "", fmt.Errorf("read GOOGLE_APPLICATION_CREDENTIALS: %w (point it at a readable credentials JSON file, or unset it to use the metadata server)", err)
		}
		creds, err := credentialsFromJSON(ctx, b, params)
		if err != nil {
			return nil, "", fmt.Errorf("GOOGLE_APPLICATION_CREDENTIALS=%s: %w", path, err)
		}
		return creds, "credentials file " + path, nil
	}
	creds, err := google.FindDefaultCredentialsWithParams(ctx, params)
	if err != nil {
		return nil, "", errors.New("no Google credentials found: run on Google Cloud with an attached service account, " +
			"set GOOGLE_APPLICATION_CREDENTIALS to a workload identity federation or service account file, " +
			"or run `gcloud auth application-default login`")
	}
	if creds.JSON == nil {
		return creds, "metadata server (attached service account)", nil
	}
	return creds, "gcloud application default credentials", nil
}

// maxCredentialsFile bounds a credentials file; real ones are a few KiB.
const maxCredentialsFile = 1 << 20

// readCredentialsFile reads a credentials file that cannot hold the agent:
// it is opened without blocking (a FIFO nobody writes would otherwise hold
// open(2) forever, deaf to signals), must be a regular file (not a pipe or
// an endless device such as /dev/zero), and is read up to a bound.
func readCredentialsFile(path string) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOCTTY, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	switch {
	case st.IsDir():
		return nil, fmt.Errorf("%s is a directory", path)
	case !st.Mode().IsRegular():
		return nil, fmt.Errorf("%s is not a regular file (%v)", path, st.Mode().Type())
	case st.Size() > maxCredentialsFile:
		return nil, fmt.Errorf("%s is larger than %d bytes, too large for a credentials file", path, maxCredentialsFile)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxCredentialsFile+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxCredentialsFile {
		return nil, fmt.Errorf("%s is larger than %d bytes, too large for a credentials file", path, maxCredentialsFile)
	}
	return b, nil
}

// freshSource is the identity's token source. It can drop its cached
// token (Refresh): x/oauth2 keeps a token until it expires even after the
// server refused it, and the client refreshes once on a 401.
type freshSource struct {
	build func() (oauth2.TokenSource, error)
	mu    sync.Mutex
	cur   oauth2.TokenSource
}

func (s *freshSource) Token() (*oauth2.Token, error) {
	s.mu.Lock()
	cur := s.cur
	s.mu.Unlock()
	return cur.Token()
}

// Refresh makes the next Token come from the token service.
func (s *freshSource) Refresh() error {
	ts, err := s.build()
	if err != nil {
		return fmt.Errorf("renew the token source: %w", err)
	}
	s.mu.Lock()
	s.cur = ts
	s.mu.Unlock()
	return nil
}

// credentialTypes are the credential file types that can stand for an
// account OS Login will import keys for.
var credentialTypes = map[string]google.CredentialsType{
	"service_account":              google.ServiceAccount,
	"authorized_user":              google.AuthorizedUser,
	"impersonated_service_account": google.ImpersonatedServiceAccount,
	"external_account":             google.ExternalAccount,
}

func credentialsFromJSON(ctx context.Context, b []byte, params google.CredentialsParams) (*google.Credentials, error) {
	var head struct {
		Type string `json:"type"`
	}
	if err := json.Unmarshal(b, &head); err != nil {
		return nil, fmt.Errorf("not a credentials JSON file: %w", err)
	}
	t, ok := credentialTypes[head.Type]
	if !ok {
		return nil, fmt.Errorf("credentials of type %q cannot be used with OS Login (want service_account, "+
			"impersonated_service_account, external_account or authorized_user)", head.Type)
	}
	creds, err := google.CredentialsFromJSONWithTypeAndParams(ctx, b, t, params)
	if err != nil {
		return nil, fmt.Errorf("malformed %s credentials: %w", head.Type, err)
	}
	return creds, nil
}

// accountFromJSON names the account a credentials file stands for.
func accountFromJSON(ctx context.Context, creds *google.Credentials, opts IdentityOptions) (string, error) {
	var f struct {
		Type                           string `json:"type"`
		ClientEmail                    string `json:"client_email"`
		ServiceAccountImpersonationURL string `json:"service_account_impersonation_url"`
	}
	if err := json.Unmarshal(creds.JSON, &f); err != nil {
		return "", fmt.Errorf("parse credentials: %w", err)
	}
	switch f.Type {
	case "service_account":
		return f.ClientEmail, nil
	case "impersonated_service_account", "external_account":
		if f.ServiceAccountImpersonationURL == "" {
			return "", errors.New("these external_account credentials stand for a federated principal, " +
				"which OS Login cannot import keys for; configure them to impersonate a service account " +
				"(service_account_impersonation_url) or pass --account")
		}
		return accountFromImpersonationURL(f.ServiceAccountImpersonationURL)
	case "authorized_user":
		return accountFromTokenInfo(ctx, creds.TokenSource, opts)
	}
	return "", fmt.Errorf("credentials of type %q do not name an account; pass --account", f.Type)
}

// quotaProject is the project user credentials bill to; gcloud writes it
// into the file, and it is the best guess for the user's project.
func quotaProject(b []byte) string {
	var f struct {
		QuotaProjectID string `json:"quota_project_id"`
	}
	json.Unmarshal(b, &f)
	return f.QuotaProjectID
}

// accountFromImpersonationURL takes the e-mail out of
// .../serviceAccounts/EMAIL:generateAccessToken.
func accountFromImpersonationURL(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("service_account_impersonation_url: %w", err)
	}
	_, rest, ok := strings.Cut(u.Path, "/serviceAccounts/")
	email, _, ok2 := strings.Cut(rest, ":")
	if !ok || !ok2 || email == "" {
		return "", fmt.Errorf("service_account_impersonation_url %q does not name a service account; pass --account", raw)
	}
	return email, nil
}

// accountFromTokenInfo asks Google whose token this is: user credentials do
// not carry the e-mail. The answer has it only when the token has the email
// scope, which `gcloud auth application-default login` grants.
func accountFromTokenInfo(ctx context.Context, ts oauth2.TokenSource, opts IdentityOptions) (string, error) {
	tok, err := ts.Token()
	if err != nil {
		return "", fmt.Errorf("get a token for the user credentials: %w", err)
	}
	endpoint := opts.TokenInfoURL
	if endpoint == "" {
		endpoint = DefaultTokenInfoURL
	}
	hc := opts.HTTPClient
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint,
		strings.NewReader(url.Values{"access_token": {tok.AccessToken}}.Encode()))
	if err != nil {
		return "", fmt.Errorf("token info: %w", err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := hc.Do(req)
	if err != nil {
		return "", fmt.Errorf("token info: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return "", fmt.Errorf("token info: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("token info: HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(body)))
	}
	var info struct {
		Email string `json:"email"`
	}
	if err := json.Unmarshal(body, &info); err != nil {
		return "", fmt.Errorf("token info: %w", err)
	}
	if info.Email == "" {
		return "", errors.New("the user credentials do not reveal their e-mail (no email scope); pass --account")
	}
	return info.Email, nil
}
