package iaprelay_test

import (
	"encoding/json"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/oslogin-agent/oslogin-agent/internal/emulator/iaprelay"
)

// TestFaultRefusals: refusing faults answer new handshakes with the chosen
// close code or HTTP status, Times times, then connects succeed again.
func TestFaultRefusals(t *testing.T) {
	tests := []struct {
		name   string
		fault  iaprelay.Fault
		code   iaprelay.CloseCode
		status int
	}{
		{"close code", iaprelay.Fault{RefuseCode: 4003, Times: 2}, iaprelay.CloseFailedToConnectToBackend, 0},
		{"http status", iaprelay.Fault{RefuseStatus: http.StatusServiceUnavailable, Times: 2}, 0, http.StatusServiceUnavailable},
		{"other instance unaffected", iaprelay.Fault{RefuseCode: 4033, Instance: "vm2", Times: 2}, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, iaprelay.Options{})
			e.be.addInstance("vm1", "127.0.0.1", true)
			port := echoServer(t)
			if err := e.relay.SetFault(tt.fault); err != nil {
				t.Fatal(err)
			}
			for i := range 3 {
				ctx := testCtx(t)
				ws, resp, err := dial(ctx, connectURL(e.base, "vm1", port), e.be.token(user, time.Hour))
				refused := i < 2 && (tt.code != 0 || tt.status != 0)
				if tt.status != 0 && refused {
					if err == nil || resp == nil || resp.StatusCode != tt.status {
						t.Fatalf("attempt %d: %v %v, want HTTP %d", i, err, resp, tt.status)
					}
					continue
				}
				if err != nil {
					t.Fatalf("attempt %d: %v", i, err)
				}
				f, err := firstFrame(ctx, ws)
				ws.CloseNow()
				if refused {
					closeErr(t, err, tt.code)
				} else if err != nil || f.Tag != iaprelay.TagConnectSuccessSID {
					t.Fatalf("attempt %d: %+v, %v", i, f, err)
				}
			}
		})
	}
}

// timedEcho sends n bytes through an echo session and returns how long the
// echo took.
func timedEcho(t *testing.T, e *env, n int) time.Duration {
	t.Helper()
	c, err := connect(testCtx(t), e.base, "vm1", echoServer(t), func() string { return e.be.token(user, time.Hour) })
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	go c.Write(make([]byte, n))
	if _, err := io.ReadFull(c, make([]byte, n)); err != nil {
		t.Fatal(err)
	}
	return time.Since(start)
}

// TestFaultSlowdowns: stall, throttle and latency slow the data down by at
// least what they promise.
func TestFaultSlowdowns(t *testing.T) {
	tests := []struct {
		name  string
		fault iaprelay.Fault
		n     int
		least time.Duration
	}{
		{"stall", iaprelay.Fault{Stall: 500 * time.Millisecond, Direction: iaprelay.DirDown}, 1000, 500 * time.Millisecond},
		{"throttle", iaprelay.Fault{Throttle: 256 << 10, Direction: iaprelay.DirUp}, 128 << 10, 450 * time.Millisecond},
		{"latency", iaprelay.Fault{Latency: 100 * time.Millisecond}, 4 * iaprelay.MaxDataLen, 400 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, iaprelay.Options{})
			e.be.addInstance("vm1", "127.0.0.1", true)
			if err := e.relay.SetFault(tt.fault); err != nil {
				t.Fatal(err)
			}
			if d := timedEcho(t, e, tt.n); d < tt.least {
				t.Errorf("echo of %d bytes took %v, want at least %v", tt.n, d, tt.least)
			}
			e.relay.ClearFaults()
			if d := timedEcho(t, e, tt.n); d > tt.least {
				t.Errorf("after ClearFaults the echo took %v", d)
			}
		})
	}
}

// TestFaultJSONAndValidation: faults travel as JSON with Go durations, and
// nonsense is refused.
func TestFaultJSONAndValidation(t *testing.T) {
	f := iaprelay.Fault{Instance: "vm1", Path: "reconnect", Times: 2, Stall: 1500 * time.Millisecond, AfterBytes: 10}
	b, err := json.Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"instance":"vm1","path":"reconnect","times":2,"afterBytes":10,"stall":"1.5s"}`; string(b) != want {
		t.Errorf("JSON %s, want %s", b, want)
	}
	var back iaprelay.Fault
	if err := json.Unmarshal(b, &back); err != nil || back != f {
		t.Errorf("round trip %+v, %v", back, err)
	}
	r := iaprelay.New(iaprelay.Options{Backend: newFakeBackend()})
	defer r.Close()
	for _, bad := range []iaprelay.Fault{
		{},
		{Drop: true, Stall: time.Second},
		{Drop: true, Rate: 2},
		{Drop: true, Direction: "sideways"},
		{Drop: true, Path: "disconnect"},
		{RefuseCode: 1000},
		{RefuseStatus: 200},
		{Latency: -time.Second},
	} {
		if err := r.SetFault(bad); err == nil {
			t.Errorf("SetFault(%+v) accepted", bad)
		}
	}
	if err := r.SetFault(iaprelay.Fault{Drop: true, Times: 1}); err != nil {
		t.Fatal(err)
	}
	if got := r.Faults(); len(got) != 1 || !got[0].Drop {
		t.Errorf("Faults() = %+v", got)
	}
}
