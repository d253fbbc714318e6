package emulator_test

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
	"golang.org/x/oauth2"
	"google.golang.org/api/googleapi"
	"google.golang.org/api/option"
	oslogin "google.golang.org/api/oslogin/v1"

	"github.com/oslogin-agent/oslogin-agent/internal/emulator"
	"github.com/oslogin-agent/oslogin-agent/internal/emulator/emulatortest"
	"github.com/oslogin-agent/oslogin-agent/internal/testenv"
)

// TestMain isolates the tests from the machine: the metadata host points at
// a closed loopback port (tests that want the emulator set it themselves),
// no key file is named, and HOME is empty so no gcloud credentials are read.
func TestMain(m *testing.M) { testenv.Main(m) }

const (
	saEmail   = "agent@emulator-project.iam.gserviceaccount.com"
	userEmail = "first.last+tag@example.com"
	project   = "emulator-project"
)

// testConfig has the attached service account plus a user who may log in
// as admin and a user who may not log in.
func testConfig() emulator.Config {
	c := emulator.DefaultConfig()
	c.Accounts = append(c.Accounts,
		emulator.Account{Email: userEmail, AdminLogin: true},
		emulator.Account{Email: "denied@example.com"},
	)
	return c
}

// sshKey returns a valid authorized_keys line for key number n.
func sshKey(t testing.TB, n int, comment string) string {
	t.Helper()
	seed := make([]byte, ed25519.SeedSize)
	seed[0] = byte(n)
	pub, err := ssh.NewPublicKey(ed25519.NewKeyFromSeed(seed).Public())
	if err != nil {
		t.Fatal(err)
	}
	line := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pub)))
	if comment != "" {
		line += " " + comment
	}
	return line
}

func fingerprint(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:])
}

// service is the unmodified generated client, pointed at the emulator.
func service(t testing.TB, srv *emulatortest.Server, token string) *oslogin.Service {
	t.Helper()
	auth := option.WithTokenSource(oauth2.StaticTokenSource(&oauth2.Token{AccessToken: token}))
	if token == "" {
		auth = option.WithoutAuthentication()
	}
	svc, err := oslogin.NewService(context.Background(), option.WithEndpoint(srv.APIEndpoint()), auth)
	if err != nil {
		t.Fatal(err)
	}
	return svc
}

// serviceFor mints a token for email and returns a client using it.
func serviceFor(t testing.TB, srv *emulatortest.Server, email string, scopes ...string) *oslogin.Service {
	t.Helper()
	tok, err := srv.Emulator.MintToken(email, scopes...)
	if err != nil {
		t.Fatal(err)
	}
	return service(t, srv, tok)
}

func apiError(t testing.TB, err error) *googleapi.Error {
	t.Helper()
	var gerr *googleapi.Error
	if !errors.As(err, &gerr) {
		t.Fatalf("error %v (%T) is not a *googleapi.Error", err, err)
	}
	return gerr
}

// do sends a raw request and returns status, headers and body.
func do(t testing.TB, method, url, token string, body io.Reader, header map[string]string) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, string(b)
}

// mdGet is a raw metadata request with the flavor header.
func mdGet(t testing.TB, srv *emulatortest.Server, path string) (int, http.Header, string) {
	t.Helper()
	return do(t, http.MethodGet, srv.URL+"/computeMetadata/v1/"+path, "", nil, map[string]string{"Metadata-Flavor": "Google"})
}

func account(t testing.TB, emu *emulator.Emulator, email string) emulator.Account {
	t.Helper()
	for _, a := range emu.Accounts() {
		if strings.EqualFold(a.Email, email) {
			return a
		}
	}
	t.Fatalf("no account %s", email)
	return emulator.Account{}
}
