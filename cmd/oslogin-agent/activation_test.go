package main

import (
	"os"
	"strconv"
	"strings"
	"testing"
)

// TestTakeActivation: the LISTEN_* variables are read once and always
// removed, so that no child takes the socket; variables meant for another
// process are ignored. The descriptor checks run against real sockets in
// e2e (TestSocketActivationRefusals).
func TestTakeActivation(t *testing.T) {
	self := strconv.Itoa(os.Getpid())
	tests := []struct {
		name, pid, fds string
		want           int
		wantErr        string
	}{
		{name: "none"},
		{name: "one socket for us", pid: self, fds: "1", want: 1},
		{name: "two sockets for us", pid: self, fds: "2", want: 2},
		{name: "for another process", pid: "1", fds: "1"},
		{name: "no pid", fds: "1"},
		{name: "garbage", pid: self, fds: "one", wantErr: `LISTEN_FDS="one" is not a number`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("LISTEN_PID", tc.pid)
			t.Setenv("LISTEN_FDS", tc.fds)
			t.Setenv("LISTEN_FDNAMES", "agent")
			got, err := takeActivation()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want %q", err, tc.wantErr)
				}
			} else if err != nil || got.fds != tc.want {
				t.Fatalf("fds %d err %v, want %d", got.fds, err, tc.want)
			}
			for _, k := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} {
				if _, ok := os.LookupEnv(k); ok {
					t.Errorf("%s is still set; children would inherit it", k)
				}
			}
		})
	}
}
