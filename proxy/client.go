package proxy

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"

	"github.com/oslogin-agent/oslogin-agent/agent"
)

// ErrNoAgent means no agent answered the request: SSH_AUTH_SOCK is unset
// or unreachable, or its agent does not serve destinations to this
// program (another agent, a forwarded one, another build). The helper then
// does the work itself.
var ErrNoAgent = errors.New("no oslogin-agent serves destinations on SSH_AUTH_SOCK")

// Agent protocol message numbers (PROTOCOL.agent, RFC 9987).
const (
	msgFailure           = 5
	msgExtension         = 27
	msgExtensionFailure  = 28
	msgExtensionResponse = 29
	maxReply             = 256 << 10
)

// Client asks the agent at Socket.
type Client struct{ Socket string }

// Lookup asks the agent for an instance record (and host keys).
func (c Client) Lookup(ctx context.Context, r LookupRequest) (LookupReply, error) {
	var reply LookupReply
	payload, f, err := c.call(ctx, agent.ExtDestinationLookup, r)
	if f != nil {
		f.Close()
	}
	if err != nil {
		return reply, err
	}
	if err := json.Unmarshal(payload, &reply); err != nil {
		return reply, fmt.Errorf("the agent's lookup reply is malformed: %w", err)
	}
	return reply, nil
}

// Dial asks the agent to connect; the file is the connection, nil when
// the reply carries an Error.
func (c Client) Dial(ctx context.Context, r DialRequest) (DialReply, *os.File, error) {
	var reply DialReply
	payload, f, err := c.call(ctx, agent.ExtDestinationDial, r)
	if err != nil {
		return reply, nil, err
	}
	if err := json.Unmarshal(payload, &reply); err != nil {
		if f != nil {
			f.Close()
		}
		return reply, nil, fmt.Errorf("the agent's dial reply is malformed: %w", err)
	}
	if reply.Error == "" && f == nil {
		return reply, nil, errors.New("the agent connected but passed no descriptor")
	}
	if reply.Error != "" && f != nil {
		f.Close()
		f = nil
	}
	return reply, f, nil
}

// call sends one extension request and reads the reply with any
// descriptor passed along with it.
func (c Client) call(ctx context.Context, name string, req any) ([]byte, *os.File, error) {
	if c.Socket == "" {
		return nil, nil, ErrNoAgent
	}
	contents, err := json.Marshal(req)
	if err != nil {
		return nil, nil, err
	}
	var d net.Dialer
	nc, err := d.DialContext(ctx, "unix", c.Socket)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrNoAgent, err)
	}
	defer nc.Close()
	uc := nc.(*net.UnixConn)
	stop := context.AfterFunc(ctx, func() { uc.SetDeadline(time.Now()) })
	defer stop()

	msg := ssh.Marshal(struct {
		Type     byte
		Name     string
		Contents []byte `ssh:"rest"`
	}{msgExtension, name, contents})
	frame := binary.BigEndian.AppendUint32(nil, uint32(len(msg)))
	if _, err := uc.Write(append(frame, msg...)); err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrNoAgent, err)
	}

	// The descriptor arrives with the reply's first bytes.
	buf := make([]byte, 4096)
	oob := make([]byte, unix.CmsgSpace(4*4))
	n, oobn, _, _, err := uc.ReadMsgUnix(buf, oob)
	f := received(oob[:oobn])
	fail := func(err error) ([]byte, *os.File, error) {
		if f != nil {
			f.Close()
		}
		return nil, nil, err
	}
	if err != nil {
		return fail(readError(ctx, err))
	}
	got := buf[:n]
	if len(got) < 4 {
		more := make([]byte, 4-len(got))
		if _, err := io.ReadFull(uc, more); err != nil {
			return fail(readError(ctx, err))
		}
		got = append(got, more...)
	}
	size := binary.BigEndian.Uint32(got)
	if size == 0 || size > maxReply {
		return fail(fmt.Errorf("the agent's reply has a bad length %d", size))
	}
	reply := make([]byte, 4+int(size))
	copied := copy(reply, got)
	if copied < len(reply) {
		if _, err := io.ReadFull(uc, reply[copied:]); err != nil {
			return fail(readError(ctx, err))
		}
	}
	reply = reply[4:]
	switch reply[0] {
	case msgExtensionResponse:
	case msgFailure, msgExtensionFailure:
		return fail(fmt.Errorf("%w: the agent refused %s", ErrNoAgent, name))
	default:
		return fail(fmt.Errorf("%w: unexpected reply type %d", ErrNoAgent, reply[0]))
	}
	var resp struct {
		Name    string
		Payload []byte
	}
	if err := ssh.Unmarshal(reply[1:], &resp); err != nil || resp.Name != name {
		return fail(fmt.Errorf("%w: malformed %s reply", ErrNoAgent, name))
	}
	return resp.Payload, f, nil
}

func readError(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("waiting for the agent: %w", ctx.Err())
	}
	return fmt.Errorf("%w: %v", ErrNoAgent, err)
}

// received takes the first descriptor from SCM_RIGHTS control data and
// closes any others.
func received(oob []byte) *os.File {
	if len(oob) == 0 {
		return nil
	}
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil
	}
	var f *os.File
	for _, m := range msgs {
		fds, err := unix.ParseUnixRights(&m)
		if err != nil {
			continue
		}
		for _, fd := range fds {
			if f == nil {
				unix.CloseOnExec(fd)
				f = os.NewFile(uintptr(fd), "agent-connection")
			} else {
				unix.Close(fd)
			}
		}
	}
	return f
}
