package agent

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/crypto/ssh"
	sshagent "golang.org/x/crypto/ssh/agent"
)

// Extension names this agent implements.
const (
	extSessionBind = "session-bind@openssh.com"
	extQuery       = "query"
)

// Limits from OpenSSH's ssh-agent.c and PROTOCOL.agent.
const (
	maxSessionIDLen = 128 // a session identifier is a hash output
	maxSessionBinds = 16  // hops recorded per connection
)

// agentExtensionResponse is SSH_AGENT_EXTENSION_RESPONSE (RFC 9987): a
// successful extension reply that carries data.
const agentExtensionResponse = 29

// sessionBind is one verified session-bind@openssh.com request: the host
// key of the server an SSH session was made with, and whether the session
// is one hop of agent forwarding rather than the authenticating one.
type sessionBind struct {
	hostKey   []byte // wire form
	hostKeyFP string
	sessionID []byte
	forwarded bool
}

// Extension handles SSH_AGENTC_EXTENSION (RFC 9987). x/crypto
// turns ErrExtensionUnsupported into SSH_AGENT_FAILURE, any other error
// into SSH_AGENT_EXTENSION_FAILURE, an empty reply into SSH_AGENT_SUCCESS,
// and sends a non-empty reply as the complete message.
func (c *conn) Extension(name string, contents []byte) ([]byte, error) {
	switch name {
	case extSessionBind:
		// OpenSSH accepts binds while locked: they reveal nothing.
		if err := c.bindSession(contents); err != nil {
			c.log.Warn("session-bind refused", "error", err)
			return nil, err
		}
		return nil, nil
	case extQuery:
		if c.a.lock.isLocked() {
			return nil, errLocked
		}
		return queryReply(), nil
	case ExtDestinationLookup, ExtDestinationDial:
		return c.destExtension(name, contents)
	default:
		c.log.Debug("unsupported extension", "extension", name)
		return nil, sshagent.ErrExtensionUnsupported
	}
}

// queryReply lists the supported extensions: the response type, the
// extension name echoed, then one string per extension.
func queryReply() []byte {
	reply := []byte{agentExtensionResponse}
	for _, s := range []string{extQuery, extQuery, extSessionBind} {
		reply = binary.BigEndian.AppendUint32(reply, uint32(len(s)))
		reply = append(reply, s...)
	}
	return reply
}

// bindSession verifies and records a session-bind@openssh.com request
// (OpenSSH's PROTOCOL.agent): the host key's signature over the
// session identifier proves which server this connection's user is talking
// to, so each signature can be logged with its destination. The rules
// follow OpenSSH: identifiers of at most 128 bytes, at most 16 binds per
// connection, and a connection bound for authentication (not forwarding)
// cannot be bound again.
func (c *conn) bindSession(contents []byte) error {
	var req struct {
		HostKey    []byte
		SessionID  []byte
		Signature  []byte
		Forwarding bool
	}
	if err := ssh.Unmarshal(contents, &req); err != nil {
		return fmt.Errorf("session-bind: malformed request: %w", err)
	}
	hostKey, err := ssh.ParsePublicKey(req.HostKey)
	if err != nil {
		return fmt.Errorf("session-bind: host key: %w", err)
	}
	fp := ssh.FingerprintSHA256(hostKey)
	if len(req.SessionID) > maxSessionIDLen {
		return fmt.Errorf("session-bind: session identifier is %d bytes, the limit is %d", len(req.SessionID), maxSessionIDLen)
	}
	var sig ssh.Signature
	if err := ssh.Unmarshal(req.Signature, &sig); err != nil {
		return fmt.Errorf("session-bind: malformed signature: %w", err)
	}
	if err := hostKey.Verify(req.SessionID, &sig); err != nil {
		return fmt.Errorf("session-bind: signature by host key %s does not verify: %w", fp, err)
	}
	if len(c.binds) >= maxSessionBinds {
		return fmt.Errorf("session-bind: connection already has %d binds", maxSessionBinds)
	}
	for _, b := range c.binds {
		if !b.forwarded {
			return errors.New("session-bind: connection already bound for authentication")
		}
		sidMatch := bytes.Equal(b.sessionID, req.SessionID)
		if sidMatch && bytes.Equal(b.hostKey, req.HostKey) {
			c.log.Debug("session already bound", "host_key", fp)
			return nil
		}
		if sidMatch {
			return fmt.Errorf("session-bind: session identifier already bound to host key %s", b.hostKeyFP)
		}
	}
	c.binds = append(c.binds, sessionBind{
		hostKey:   bytes.Clone(req.HostKey),
		hostKeyFP: fp,
		sessionID: bytes.Clone(req.SessionID),
		forwarded: req.Forwarding,
	})
	c.log.Debug("session bound", "host_key", fp, "host_key_type", hostKey.Type(), "forwarded", req.Forwarding, "hops", len(c.binds))
	return nil
}
