package oslogin_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/oslogin-agent/oslogin-agent/internal/emulator"
	"github.com/oslogin-agent/oslogin-agent/internal/emulator/emulatortest"
	"github.com/oslogin-agent/oslogin-agent/oslogin"
)

func TestResolveEndpoints(t *testing.T) {
	env := func(kv ...string) func(string) string {
		m := map[string]string{}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return func(k string) string { return m[k] }
	}
	tests := []struct {
		name    string
		o       oslogin.EndpointOverrides
		getenv  func(string) string
		want    oslogin.Endpoints
		wantErr string
	}{
		{name: "Google by default", getenv: env(), want: oslogin.Endpoints{
			OSLogin: oslogin.DefaultOSLoginURL, Compute: oslogin.DefaultComputeURL, IAPRelay: oslogin.DefaultIAPRelayURL,
			TokenInfo: oslogin.DefaultTokenInfoURL}},
		{name: "the emulator variable alone", getenv: env("OSLOGIN_EMULATOR_HOST", "127.0.0.1:8085", "GCE_METADATA_HOST", "127.0.0.1:9"),
			want: oslogin.Endpoints{MetadataHost: "127.0.0.1:8085", OSLogin: "http://127.0.0.1:8085/",
				Compute: "http://127.0.0.1:8085/compute/v1/", IAPRelay: "ws://127.0.0.1:8085/v4",
				TokenInfo: "http://127.0.0.1:8085/tokeninfo", Emulator: "127.0.0.1:8085"}},
		{name: "localhost and IPv6 loopback are loopback", getenv: env("OSLOGIN_EMULATOR_HOST", "[::1]:8085"),
			want: oslogin.Endpoints{MetadataHost: "[::1]:8085", OSLogin: "http://[::1]:8085/",
				Compute: "http://[::1]:8085/compute/v1/", IAPRelay: "ws://[::1]:8085/v4",
				TokenInfo: "http://[::1]:8085/tokeninfo", Emulator: "[::1]:8085"}},
		{name: "an explicit flag wins over the emulator", o: oslogin.EndpointOverrides{OSLogin: "http://localhost:9000/api"},
			getenv: env("OSLOGIN_EMULATOR_HOST", "127.0.0.1:8085"),
			want: oslogin.Endpoints{MetadataHost: "127.0.0.1:8085", OSLogin: "http://localhost:9000/api/",
				Compute: "http://127.0.0.1:8085/compute/v1/", IAPRelay: "ws://127.0.0.1:8085/v4",
				TokenInfo: "http://127.0.0.1:8085/tokeninfo", Emulator: "127.0.0.1:8085"}},
		{name: "an explicit flag without the emulator", o: oslogin.EndpointOverrides{OSLogin: "https://oslogin.example.test"}, getenv: env(),
			want: oslogin.Endpoints{OSLogin: "https://oslogin.example.test/", Compute: oslogin.DefaultComputeURL,
				IAPRelay: oslogin.DefaultIAPRelayURL, TokenInfo: oslogin.DefaultTokenInfoURL}},
		{name: "a remote flag with the emulator set", o: oslogin.EndpointOverrides{OSLogin: "https://oslogin.googleapis.com/"},
			getenv: env("OSLOGIN_EMULATOR_HOST", "127.0.0.1:8085"), wantErr: "is not on this machine, but OSLOGIN_EMULATOR_HOST is set"},
		{name: "a remote token info URL with the emulator set", o: oslogin.EndpointOverrides{TokenInfo: "https://192.0.2.1/tokeninfo"},
			getenv: env("OSLOGIN_EMULATOR_HOST", "127.0.0.1:8085"), wantErr: "is not on this machine"},
		{name: "emulator not on loopback", getenv: env("OSLOGIN_EMULATOR_HOST", "192.0.2.1:8085"), wantErr: "is not a loopback host:port"},
		{name: "emulator given as a URL", getenv: env("OSLOGIN_EMULATOR_HOST", "http://127.0.0.1:8085"), wantErr: "is not a loopback host:port"},
		{name: "emulator without port", getenv: env("OSLOGIN_EMULATOR_HOST", "localhost"), wantErr: "is not a loopback host:port"},
		{name: "a local metadata server without the emulator variable", getenv: env("GCE_METADATA_HOST", "127.0.0.1:8085"),
			wantErr: "set OSLOGIN_EMULATOR_HOST=127.0.0.1:8085 instead"},
		{name: "a local metadata server with an explicit endpoint", o: oslogin.EndpointOverrides{OSLogin: "http://127.0.0.1:8085"},
			getenv: env("GCE_METADATA_HOST", "127.0.0.1:8085"),
			want: oslogin.Endpoints{MetadataHost: "127.0.0.1:8085", OSLogin: "http://127.0.0.1:8085/", Compute: oslogin.DefaultComputeURL,
				IAPRelay: oslogin.DefaultIAPRelayURL, TokenInfo: oslogin.DefaultTokenInfoURL}},
		{name: "a metadata server elsewhere", getenv: env("GCE_METADATA_HOST", "metadata.example.test:80"),
			want: oslogin.Endpoints{MetadataHost: "metadata.example.test:80", OSLogin: oslogin.DefaultOSLoginURL, Compute: oslogin.DefaultComputeURL,
				IAPRelay: oslogin.DefaultIAPRelayURL, TokenInfo: oslogin.DefaultTokenInfoURL}},
		{name: "not a URL", o: oslogin.EndpointOverrides{OSLogin: "not-a-url"}, getenv: env(), wantErr: `--endpoint "not-a-url" is not an http:// or https:// URL`},
		{name: "ftp", o: oslogin.EndpointOverrides{OSLogin: "ftp://127.0.0.1/"}, getenv: env(), wantErr: "is not an http:// or https:// URL"},
		{name: "no host", o: oslogin.EndpointOverrides{OSLogin: "http:///v1"}, getenv: env(), wantErr: "names no host"},
		{name: "query", o: oslogin.EndpointOverrides{OSLogin: "http://127.0.0.1/?x=1"}, getenv: env(), wantErr: "plain base URL"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := oslogin.ResolveEndpoints(tc.o, tc.getenv)
			if tc.wantErr != "" {
				var ee *oslogin.EndpointError
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !errors.As(err, &ee) {
					t.Fatalf("err %v, want an EndpointError containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("endpoints\n %+v\nwant\n %+v", got, tc.want)
			}
		})
	}
}

// recorder is a loopback listener that counts connections: a proxy, or a
// stand-in for any host a request must not reach.
func recorder(t *testing.T) (addr string, conns *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	conns = new(atomic.Int64)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			c.Close()
		}
	}()
	return ln.Addr().String(), conns
}

// TestEmulatorTransportStaysOnLoopback: with OSLOGIN_EMULATOR_HOST set, the
// transport every client uses refuses addresses beyond loopback, by IP or
// by name, and ignores proxies; loopback still works.
func TestEmulatorTransportStaysOnLoopback(t *testing.T) {
	proxy, proxied := recorder(t)
	t.Setenv("HTTPS_PROXY", "http://"+proxy)
	t.Setenv("HTTP_PROXY", "http://"+proxy)
	t.Setenv("NO_PROXY", "")
	srv := emulatortest.Start(t, emulator.DefaultConfig())
	e, err := oslogin.ResolveEndpoints(oslogin.EndpointOverrides{}, func(k string) string {
		if k == oslogin.EmulatorHostEnv {
			return srv.Host
		}
		return ""
	})
	if err != nil {
		t.Fatal(err)
	}
	hc := e.HTTPClient()
	for _, u := range []string{"https://192.0.2.1/token", "http://192.0.2.1/", "https://oauth2.googleapis.com/token", "http://example.test/"} {
		start := time.Now()
		_, err := hc.Get(u)
		if !errors.Is(err, oslogin.ErrNotLoopback) {
			t.Errorf("GET %s: %v; want a refusal to leave loopback", u, err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("GET %s took %v: it was tried, not refused", u, d)
		}
	}
	resp, err := hc.Get(e.OSLogin)
	if err != nil {
		t.Fatalf("the emulator itself: %v", err)
	}
	resp.Body.Close()
	if n := proxied.Load(); n != 0 {
		t.Errorf("%d connections went to the proxy; with the emulator set none may", n)
	}
}

// TestEmulatorRefusesCredentialsNamingGoogle: a credentials file whose
// token endpoint is Google's is refused while the emulator is set, instead
// of sending a signed assertion there.
func TestEmulatorRefusesCredentialsNamingGoogle(t *testing.T) {
	cfg := emulator.DefaultConfig()
	srv := emulatortest.Start(t, cfg)
	b, err := srv.Emulator.ServiceAccountKeyJSON(cfg.Accounts[0].Email, "https://oauth2.googleapis.com/token")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "key.json")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("GOOGLE_APPLICATION_CREDENTIALS", path)
	e, err := oslogin.ResolveEndpoints(oslogin.EndpointOverrides{}, func(k string) string {
		if k == oslogin.EmulatorHostEnv {
			return srv.Host
		}
		return ""
	})
	if err != nil {
		t.Fatal(err)
	}
	_, err = oslogin.FindIdentity(context.Background(), oslogin.IdentityOptions{HTTPClient: e.HTTPClient()})
	if !errors.Is(err, oslogin.ErrNotLoopback) {
		t.Fatalf("FindIdentity: %v; want a refusal to leave loopback", err)
	}
	if !strings.Contains(err.Error(), "oauth2.googleapis.com is not loopback") {
		t.Errorf("the message does not name the host refused: %v", err)
	}
	if n := srv.Emulator.Calls()["token"]; n != 0 {
		t.Errorf("the emulator's token endpoint was called %d times", n)
	}
	_ = http.StatusOK
}
