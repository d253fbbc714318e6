package iaptunnel_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/oslogin-agent/oslogin-agent/iaptunnel"
	"github.com/oslogin-agent/oslogin-agent/internal/emulator/iaprelay"
)

// TestDialErrors: each way IAP refuses a tunnel gives the exact sentence a
// person acts on. The relay produces them for real (unknown instance, no
// IAM, closed port, bad token) or by a refusal fault.
func TestDialErrors(t *testing.T) {
	tests := []struct {
		name     string
		instance string
		email    string
		closed   bool // dial a port nothing listens on
		fault    *iaprelay.Fault
		code     int
		want     string
	}{
		{name: "4033 not authorized", instance: "vm1", email: outsider, code: 4033,
			want: `IAP denied the tunnel to instance "vm1" (zone europe-west1-b, project tunnel-project): the account no.iam@example.com needs the role roles/iap.tunnelResourceAccessor (IAP-secured Tunnel User) on the project or the instance, and any IAM condition or access level on it must be met [4033: not authorized]`},
		{name: "4003 port closed", instance: "vm1", closed: true, code: 4003,
			want: `IAP could not connect to port PORT of instance "vm1" (zone europe-west1-b, project tunnel-project): the VPC firewall must allow ingress from 35.235.240.0/20 on TCP port PORT, the instance must be running, and the service on that port (sshd for SSH) must be up [4003: failed to connect to backend]`},
		{name: "4003 stopped", instance: "stopped", code: 4003,
			want: `IAP could not connect to port PORT of instance "stopped" (zone europe-west1-b, project tunnel-project): the VPC firewall must allow ingress from 35.235.240.0/20 on TCP port PORT, the instance must be running, and the service on that port (sshd for SSH) must be up [4003: failed to connect to backend]`},
		{name: "4047 lookup failed", instance: "nosuchvm", code: 4047,
			want: `IAP found no instance "nosuchvm" (zone europe-west1-b, project tunnel-project) with interface nic0, or the account cannot see it: check the instance name, zone and project [4047: lookup failed]`},
		{name: "4001 sid unknown", instance: "vm1", fault: &iaprelay.Fault{RefuseCode: 4001, Times: 1}, code: 4001,
			want: `the IAP tunnel to instance "vm1" (zone europe-west1-b, project tunnel-project) was lost and cannot be resumed; open a new connection [4001: sid unknown]`},
		{name: "4074 failed to rewind", instance: "vm1", fault: &iaprelay.Fault{RefuseCode: 4074, Times: 1}, code: 4074,
			want: `the IAP tunnel to instance "vm1" (zone europe-west1-b, project tunnel-project) was lost and cannot be resumed; open a new connection [4074: failed to rewind]`},
		{name: "4000 unknown", instance: "vm1", fault: &iaprelay.Fault{RefuseCode: 4000, Times: 1}, code: 4000,
			want: `IAP closed the tunnel to instance "vm1" (zone europe-west1-b, project tunnel-project) [4000: error unknown]`},
		{name: "4013 invalid data", instance: "vm1", fault: &iaprelay.Fault{RefuseCode: 4013, Times: 1}, code: 4013,
			want: `IAP rejected the tunnel client's data to instance "vm1" (zone europe-west1-b, project tunnel-project) as a protocol error; this is a bug in the client [4013: invalid data]`},
		{name: "401 bad token", instance: "vm1", email: "expired", code: 401,
			want: `IAP rejected the access token (HTTP 401 Unauthorized): the credentials are invalid or expired, or lack the cloud-platform scope: invalid bearer token`},
		{name: "403 proxy", instance: "vm1", fault: &iaprelay.Fault{RefuseStatus: 403, Times: 1}, code: 403,
			want: `the WebSocket upgrade to IAP was refused (HTTP 403 Forbidden): a corporate proxy or firewall may be blocking WebSockets to tunnel.cloudproxy.app, or the IAP API is not enabled for the project: injected fault`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, iaprelay.Options{})
			e.be.addInstance("stopped", false)
			if tt.email != "" {
				e.email = tt.email
			}
			if tt.email == "expired" {
				e.ttl = -time.Second
			}
			if tt.fault != nil {
				e.relay.SetFault(*tt.fault)
			}
			port := echoServer(t)
			if tt.closed {
				port = closedPort(t)
			}
			opts := e.opts(t)
			_, err := iaptunnel.Dial(context.Background(), target(tt.instance, port), opts)
			if err == nil {
				t.Fatal("Dial succeeded")
			}
			want := strings.ReplaceAll(tt.want, "PORT", itoa(port))
			if err.Error() != want {
				t.Errorf("error:\n got %s\nwant %s", err, want)
			}
			var ce *iaptunnel.CloseError
			var he *iaptunnel.HandshakeError
			switch {
			case errors.As(err, &ce):
				if ce.Code != tt.code {
					t.Errorf("code %d, want %d", ce.Code, tt.code)
				}
			case errors.As(err, &he):
				if he.Status != tt.code {
					t.Errorf("status %d, want %d", he.Status, tt.code)
				}
			default:
				t.Errorf("error is %T", err)
			}
		})
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// TestResumeRefused: a session lost on the relay's side (4001 on
// reconnect) fails the Conn with the actionable error, not a hang.
func TestResumeRefused(t *testing.T) {
	e := newEnv(t, iaprelay.Options{})
	e.relay.SetFault(iaprelay.Fault{RefuseCode: 4074, Path: "reconnect"})
	e.relay.SetFault(iaprelay.Fault{Drop: true, AfterBytes: 10, Times: 1})
	c := dial(t, e, echoServer(t))
	c.Write([]byte("more than ten bytes"))
	_, err := c.Read(make([]byte, 100))
	var ce *iaptunnel.CloseError
	if !errors.As(err, &ce) || ce.Code != 4074 {
		t.Fatalf("Read: %v, want a 4074 CloseError", err)
	}
}

// TestConnectTimeout: a relay that upgrades but never sends the session id
// (what IAP does when the backend does not answer) times out.
func TestConnectTimeout(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{iaptunnel.Subprotocol}, InsecureSkipVerify: true})
		if err != nil {
			return
		}
		defer ws.CloseNow()
		ws.Read(r.Context()) // until the client gives up
	}))
	t.Cleanup(srv.Close)
	e := &env{be: &backend{tokens: map[string]tokenInfo{}}, ttl: time.Hour, email: user}
	opts := iaptunnel.Options{TokenSource: e, URL: "ws" + strings.TrimPrefix(srv.URL, "http") + "/v4", ConnectTimeout: 300 * time.Millisecond}
	start := time.Now()
	_, err := iaptunnel.Dial(context.Background(), target("vm1", 22), opts)
	if err == nil || !strings.HasPrefix(err.Error(), "timed out waiting for IAP to open the tunnel") {
		t.Fatalf("Dial: %v", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("took %v with a 300ms timeout", d)
	}
}
