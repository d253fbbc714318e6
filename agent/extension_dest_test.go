//go:build linux

package agent

import (
	"context"
	"crypto/rand"
	"io"
	"net"
	"os"
	"testing"

	"golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"
)

// fakeDests answers lookups with a fixed payload and dials with the read
// end of a pipe that already holds "connected".
type fakeDests struct{}

func (fakeDests) Lookup(ctx context.Context, req []byte) ([]byte, error) {
	return append([]byte("looked up "), req...), nil
}

func (fakeDests) Dial(ctx context.Context, req []byte) ([]byte, *os.File, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, nil, err
	}
	w.WriteString("connected")
	w.Close()
	return []byte("dialled"), r, nil
}

// destCall sends one extension request on c and returns the reply and the
// descriptor that came with it, if any.
func destCall(t *testing.T, c *net.UnixConn, name string, contents []byte) ([]byte, *os.File) {
	t.Helper()
	msg := ssh.Marshal(struct {
		Type     byte
		Name     string
		Contents []byte `ssh:"rest"`
	}{27, name, contents})
	if _, err := c.Write(frame(msg)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	oob := make([]byte, unix.CmsgSpace(4))
	n, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
	if err != nil {
		t.Fatal(err)
	}
	head := buf[:n]
	var f *os.File
	if oobn > 0 {
		msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
		if err != nil || len(msgs) != 1 {
			t.Fatalf("control data: %v (%d messages)", err, len(msgs))
		}
		fds, err := unix.ParseUnixRights(&msgs[0])
		if err != nil || len(fds) != 1 {
			t.Fatalf("rights: %v %v", fds, err)
		}
		f = os.NewFile(uintptr(fds[0]), "passed")
		t.Cleanup(func() { f.Close() })
	}
	reply, err := readFrame(io.MultiReader((*bytesReader)(&head), c))
	if err != nil {
		t.Fatal(err)
	}
	return reply, f
}

type bytesReader []byte

func (b *bytesReader) Read(p []byte) (int, error) {
	if len(*b) == 0 {
		return 0, io.EOF
	}
	n := copy(p, *b)
	*b = (*b)[n:]
	return n, nil
}

func TestDestinationExtensions(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	host := newHostKey(t, "ed25519")
	sessionID := make([]byte, 32)
	rand.Read(sessionID)
	bind := bindRequest(t, host, sessionID, sessionID, true)

	tests := []struct {
		name   string
		opts   Options
		bind   bool // a session-bind first, as a forwarded connection has
		ext    string
		want   string // the payload; "" means refused
		wantFD bool
	}{
		{"lookup", Options{Destinations: fakeDests{}, HelperExecutable: self}, false, ExtDestinationLookup, "looked up {}", false},
		{"dial passes the connection", Options{Destinations: fakeDests{}, HelperExecutable: self}, false, ExtDestinationDial, "dialled", true},
		{"dial after a session-bind", Options{Destinations: fakeDests{}, HelperExecutable: self}, true, ExtDestinationDial, "", false},
		{"lookup after a session-bind", Options{Destinations: fakeDests{}, HelperExecutable: self}, true, ExtDestinationLookup, "", false},
		{"dial from another program", Options{Destinations: fakeDests{}, HelperExecutable: "/bin/sh"}, false, ExtDestinationDial, "", false},
		{"no destinations", Options{HelperExecutable: self}, false, ExtDestinationDial, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ta := startTestAgent(t, tt.opts)
			path := serve(t, ta.Agent)
			c := dial(t, path).(*net.UnixConn)
			if tt.bind {
				reply, _ := destCall(t, c, extSessionBind, bind)
				if len(reply) != 1 || reply[0] != 6 {
					t.Fatalf("session-bind reply %v, want SSH_AGENT_SUCCESS", reply)
				}
			}
			reply, f := destCall(t, c, tt.ext, []byte("{}"))
			if tt.want == "" {
				if len(reply) != 1 || reply[0] != 28 || f != nil {
					t.Fatalf("reply %q with descriptor %v, want SSH_AGENT_EXTENSION_FAILURE and none", reply, f != nil)
				}
				return
			}
			var resp struct {
				Type    byte
				Name    string
				Payload []byte
			}
			if err := ssh.Unmarshal(reply, &resp); err != nil || resp.Type != 29 || resp.Name != tt.ext || string(resp.Payload) != tt.want {
				t.Fatalf("reply %+v (%v), want %q", resp, err, tt.want)
			}
			if (f != nil) != tt.wantFD {
				t.Fatalf("descriptor passed: %v, want %v", f != nil, tt.wantFD)
			}
			if f != nil {
				got, err := io.ReadAll(f)
				if err != nil || string(got) != "connected" {
					t.Errorf("read %q (%v) through the passed descriptor, want %q", got, err, "connected")
				}
			}
			// The connection still serves the protocol afterwards.
			c.Write(frame([]byte{11}))
			if r, err := readFrame(c); err != nil || r[0] != 12 {
				t.Errorf("list after the extension: %v %v", r, err)
			}
		})
	}
}
