package emulator_test

import (
	"context"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/oslogin-agent/oslogin-agent/iaptunnel"
	"github.com/oslogin-agent/oslogin-agent/internal/emulator"
	"github.com/oslogin-agent/oslogin-agent/internal/emulator/emulatortest"
	"github.com/oslogin-agent/oslogin-agent/internal/emulator/iaprelay"
)

// emuTokens mints a fresh emulator token for an account per call, as a
// client's token source would fetch one.
type emuTokens struct {
	srv   *emulatortest.Server
	email string
}

func (s emuTokens) Token() (*oauth2.Token, error) {
	tok, err := s.srv.Emulator.MintToken(s.email)
	return &oauth2.Token{AccessToken: tok, TokenType: "Bearer"}, err
}

// echoPort serves an echo on 127.0.0.1 until the test ends.
func echoPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); io.Copy(c, c) }()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port
}

// relayConfig: vm-up (running), vm-down (terminated), vm-locked (running,
// the user may tunnel to vm-up only).
func relayConfig() emulator.Config {
	c := testConfig()
	c.Instances = []emulator.Instance{
		{Name: "vm-up", Grants: map[string]emulator.InstanceGrant{userEmail: {IAPTunnel: true}}},
		{Name: "vm-down", Status: "TERMINATED"},
		{Name: "vm-locked"},
	}
	return c
}

func tunnel(t *testing.T, srv *emulatortest.Server, email, instance string, port int) (*iaptunnel.Conn, error) {
	t.Helper()
	opts := iaptunnel.Options{TokenSource: emuTokens{srv, email}, URL: "ws://" + srv.Host + "/v4", Account: email,
		ConnectTimeout: 5 * time.Second, ReconnectWindow: 10 * time.Second}
	tgt := iaptunnel.Target{Project: srv.Emulator.Config().ProjectID, Zone: emulator.DefaultZone, Instance: instance, Port: port}
	c, err := iaptunnel.Dial(context.Background(), tgt, opts)
	if err == nil {
		t.Cleanup(func() { c.Close() })
	}
	return c, err
}

// TestRelayFaceWired: the emulator serves the IAP relay on its own port,
// over its own tokens, instances and grants.
func TestRelayFaceWired(t *testing.T) {
	srv := emulatortest.Start(t, relayConfig())
	port := echoPort(t)
	c, err := tunnel(t, srv, userEmail, "vm-up", port)
	if err != nil {
		t.Fatalf("tunnel with the instance grant: %v", err)
	}
	msg := strings.Repeat("through the relay ", 2000)
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil || string(got) != msg {
		t.Fatalf("echo: %v", err)
	}
	if _, err := tunnel(t, srv, saEmail, "vm-up", port); err != nil {
		t.Errorf("the default account holds the project-wide IAP role: %v", err)
	}
	for _, tc := range []struct {
		email, instance string
		port            int
		code            int
	}{
		{userEmail, "vm-locked", port, iaptunnel.CloseNotAuthorized},
		{userEmail, "no-such-vm", port, iaptunnel.CloseLookupFailed},
		{saEmail, "vm-down", port, iaptunnel.CloseFailedToConnectToBackend},
		{saEmail, "vm-up", closedPort(t), iaptunnel.CloseFailedToConnectToBackend},
	} {
		_, err := tunnel(t, srv, tc.email, tc.instance, tc.port)
		var ce *iaptunnel.CloseError
		if !errors.As(err, &ce) || ce.Code != tc.code {
			t.Errorf("%s to %s:%d: %v, want close code %d", tc.email, tc.instance, tc.port, err, tc.code)
		}
	}
	if st, err := srv.Admin.RelayStats(context.Background()); err != nil || st.Connects != 2 {
		t.Errorf("relay stats %+v %v, want 2 connects", st, err)
	}
}

// TestRelayTokenExpiryUsesEmulatorClock: advancing the emulator clock past
// a token's life makes the relay close with 4004, and the client resumes
// with a fresh token without losing a byte.
func TestRelayTokenExpiryUsesEmulatorClock(t *testing.T) {
	srv := emulatortest.Start(t, relayConfig())
	c, err := tunnel(t, srv, userEmail, "vm-up", echoPort(t))
	if err != nil {
		t.Fatal(err)
	}
	srv.Emulator.Advance(2 * time.Hour)
	deadline := time.Now().Add(10 * time.Second)
	for i := 0; c.Reconnects() == 0; i++ {
		if time.Now().After(deadline) {
			t.Fatal("no reauthentication within 10 s of the token expiring")
		}
		line := "ping " + strconv.Itoa(i) + "\n"
		if _, err := c.Write([]byte(line)); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(line))
		if _, err := io.ReadFull(c, got); err != nil || string(got) != line {
			t.Fatalf("echo %d: %q %v", i, got, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestRelayFaultsThroughAdminAPI: a drop set through the admin API is
// survived by a resuming client.
func TestRelayFaultsThroughAdminAPI(t *testing.T) {
	srv := emulatortest.Start(t, relayConfig())
	ctx := context.Background()
	if err := srv.Admin.SetRelayFault(ctx, iaprelay.Fault{Drop: true, AfterBytes: 100 << 10, Times: 1}); err != nil {
		t.Fatal(err)
	}
	c, err := tunnel(t, srv, userEmail, "vm-up", echoPort(t))
	if err != nil {
		t.Fatal(err)
	}
	msg := []byte(strings.Repeat("0123456789abcdef", 32<<10)) // 512 KiB
	go c.Write(msg)
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil || string(got) != string(msg) {
		t.Fatalf("echo across a drop: %v", err)
	}
	st, _ := srv.Admin.RelayStats(ctx)
	if st.Drops != 1 || c.Reconnects() != 1 {
		t.Errorf("drops %d, reconnects %d; want 1 each", st.Drops, c.Reconnects())
	}
	if err := srv.Admin.ClearRelayFaults(ctx); err != nil {
		t.Fatal(err)
	}
	if err := srv.Admin.SetRelayFault(ctx, iaprelay.Fault{Drop: true, Direction: "sideways"}); err == nil {
		t.Error("a fault with a bad direction was accepted")
	}
}

func closedPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	return port
}
