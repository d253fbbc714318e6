package iaprelay_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/oslogin-agent/oslogin-agent/internal/emulator/iaprelay"
)

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestHandshakeHTTPErrors: what IAP answers before the upgrade.
func TestHandshakeHTTPErrors(t *testing.T) {
	e := newEnv(t, iaprelay.Options{})
	port := echoServer(t)
	e.be.addInstance("vm1", "127.0.0.1", true)
	good := e.be.token(user, time.Hour)
	expired := e.be.token(user, -time.Second)
	tests := []struct {
		name, url, token string
		noSubprotocol    bool
		want             int
	}{
		{"no token", connectURL(e.base, "vm1", port), "", false, http.StatusUnauthorized},
		{"unknown token", connectURL(e.base, "vm1", port), "ya29.unknown", false, http.StatusUnauthorized},
		{"expired token", connectURL(e.base, "vm1", port), expired, false, http.StatusUnauthorized},
		{"no subprotocol", connectURL(e.base, "vm1", port), good, true, http.StatusBadRequest},
		{"no port", strings.Replace(connectURL(e.base, "vm1", port), "port=", "x=", 1), good, false, http.StatusBadRequest},
		{"port 0", connectURL(e.base, "vm1", 0), good, false, http.StatusBadRequest},
		{"newWebsocket not a bool", strings.Replace(connectURL(e.base, "vm1", port), "newWebsocket=True", "newWebsocket=maybe", 1), good, false, http.StatusBadRequest},
		{"reconnect without sid", e.base + "/reconnect?ack=0&zone=" + zone, good, false, http.StatusBadRequest},
		{"unknown path", e.base + "/disconnect", good, false, http.StatusNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := &websocket.DialOptions{HTTPHeader: http.Header{"Origin": {"bot:iap-tunneler"}}}
			if !tt.noSubprotocol {
				opts.Subprotocols = []string{iaprelay.Subprotocol}
			}
			if tt.token != "" {
				opts.HTTPHeader.Set("Authorization", "Bearer "+tt.token)
			}
			ws, resp, err := websocket.Dial(testCtx(t), tt.url, opts)
			if err == nil {
				ws.CloseNow()
				t.Fatal("upgrade succeeded")
			}
			if resp == nil || resp.StatusCode != tt.want {
				t.Fatalf("got %v (response %v), want HTTP %d", err, resp, tt.want)
			}
		})
	}
}

// closeErr asserts err is a close with code and the reference's reason.
func closeErr(t *testing.T, err error, code iaprelay.CloseCode) {
	t.Helper()
	var ce websocket.CloseError
	if !errors.As(err, &ce) {
		t.Fatalf("error %v, want close %d", err, code)
	}
	if int(ce.Code) != int(code) || ce.Reason != code.Reason() {
		t.Fatalf("close %d %q, want %d %q", ce.Code, ce.Reason, code, code.Reason())
	}
}

// TestConnectCloseCodes: lookup, IAM and backend failures after the
// upgrade, with IAP's codes and reason texts.
func TestConnectCloseCodes(t *testing.T) {
	e := newEnv(t, iaprelay.Options{DialTimeout: 2 * time.Second})
	port := echoServer(t)
	e.be.addInstance("vm1", "127.0.0.1", true)
	e.be.addInstance("stopped", "127.0.0.1", false)
	tests := []struct {
		name string
		url  func() string
		who  string
		want iaprelay.CloseCode
	}{
		{"unknown instance", func() string { return connectURL(e.base, "nope", port) }, user, iaprelay.CloseLookupFailed},
		{"unknown project", func() string { return strings.Replace(connectURL(e.base, "vm1", port), project, "other", 1) }, user, iaprelay.CloseLookupFailed},
		{"unknown zone", func() string { return strings.Replace(connectURL(e.base, "vm1", port), zone, "us-east1-b", 1) }, user, iaprelay.CloseLookupFailed},
		{"unknown interface", func() string { return strings.Replace(connectURL(e.base, "vm1", port), "nic0", "nic7", 1) }, user, iaprelay.CloseLookupFailed},
		{"no IAM", func() string { return connectURL(e.base, "vm1", port) }, outsider, iaprelay.CloseNotAuthorized},
		{"stopped instance", func() string { return connectURL(e.base, "stopped", port) }, user, iaprelay.CloseFailedToConnectToBackend},
		{"closed port", func() string { return connectURL(e.base, "vm1", closedPort(t)) }, user, iaprelay.CloseFailedToConnectToBackend},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testCtx(t)
			ws, _, err := dial(ctx, tt.url(), e.be.token(tt.who, time.Hour))
			if err != nil {
				t.Fatalf("upgrade: %v", err)
			}
			defer ws.CloseNow()
			_, err = firstFrame(ctx, ws)
			closeErr(t, err, tt.want)
		})
	}
	if st := e.relay.Stats(); st.SessionsOpen != 0 || st.Connects != 0 || st.Rejected != len(tests) {
		t.Errorf("stats %+v, want no sessions and %d rejected", st, len(tests))
	}
}

// TestEchoQueryVariants: the forms of newWebsocket and interface clients
// send (gcloud True, others true or nothing; interface defaults to nic0).
func TestEchoQueryVariants(t *testing.T) {
	e := newEnv(t, iaprelay.Options{})
	port := echoServer(t)
	e.be.addInstance("vm1", "127.0.0.1", true)
	for _, edit := range []func(string) string{
		func(u string) string { return u },
		func(u string) string { return strings.Replace(u, "newWebsocket=True", "newWebsocket=true", 1) },
		func(u string) string { return strings.Replace(u, "newWebsocket=True&", "", 1) },
		func(u string) string { return strings.Replace(u, "&interface=nic0", "", 1) },
	} {
		u := edit(connectURL(e.base, "vm1", port))
		t.Run(u[strings.Index(u, "?"):], func(t *testing.T) {
			ctx := testCtx(t)
			ws, _, err := dial(ctx, u, e.be.token(user, time.Hour))
			if err != nil {
				t.Fatal(err)
			}
			defer ws.CloseNow()
			if f, err := firstFrame(ctx, ws); err != nil || f.Tag != iaprelay.TagConnectSuccessSID || f.SID == "" {
				t.Fatalf("first frame %+v, %v", f, err)
			}
			if err := ws.Write(ctx, websocket.MessageBinary, iaprelay.AppendData(nil, []byte("ping"))); err != nil {
				t.Fatal(err)
			}
			f, err := firstFrame(ctx, ws)
			if err != nil || f.Tag != iaprelay.TagData || string(f.Data) != "ping" {
				t.Fatalf("echo %+v, %v", f, err)
			}
		})
	}
	if st := e.relay.Stats(); st.Connects != 4 {
		t.Errorf("connects %d, want 4", st.Connects)
	}
	_ = fmt.Sprint
}
