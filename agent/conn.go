package agent

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"golang.org/x/crypto/ssh"
	sshagent "golang.org/x/crypto/ssh/agent"
)

// managedKeys explains why ssh-add cannot change the agent's keys.
const managedKeys = "oslogin-agent manages its own keys; ssh-add cannot add or remove keys"

var (
	// errManaged answers ssh-add's add and remove requests.
	errManaged = errors.New(managedKeys)
	// errLocked answers requests refused because the agent is locked.
	errLocked = errors.New("agent is locked")
)

// conn is the agent as one client connection sees it. x/crypto's ServeAgent
// hands requests to an Agent interface that knows nothing about the
// connection, so each accepted connection gets its own conn carrying what
// the handlers need: the peer's credentials, the session binds it made, and
// a logger with the peer's attributes. ServeAgent handles one connection's
// requests in order, so conn's own fields need no locking.
type conn struct {
	a     *Agent
	ctx   context.Context // done when the connection must stop
	peer  peerCred
	log   *slog.Logger
	binds []sessionBind
	// listed is the certificate the last List offered, if any. OpenSSH
	// names the plain key, not the certificate, in its sign requests, so
	// this is how a signature record learns which certificate it serves.
	listed *heldCert
	// signed says a sign request on this connection succeeded: ssh signed
	// with something the agent listed, so a listed certificate the VM
	// refused is not what ended the login (see certUnused).
	signed bool
	fdw    *fdWriter // the reply writer, for descriptors a dial passes
}

var _ sshagent.ExtendedAgent = (*conn)(nil)

func (a *Agent) newConn(ctx context.Context, peer peerCred) *conn {
	return &conn{a: a, ctx: ctx, peer: peer, log: a.log.With(peer.attr())}
}

// List returns the keys currently offered, in the order described at
// Agent.offered; an empty list while the agent is locked. It answers
// SSH_AGENTC_REQUEST_IDENTITIES.
func (c *conn) List() ([]*sshagent.Key, error) {
	if c.a.lock.isLocked() {
		return nil, nil
	}
	user := c.a.Username()
	offers := c.a.offered(c.a.now())
	keys := make([]*sshagent.Key, 0, len(offers)+1)
	c.listed = c.certIdentity()
	if c.listed != nil {
		keys = append(keys, certKey(c.listed)) // first: on a certificate-only VM it is the one that works
	}
	for _, o := range offers {
		keys = append(keys, &sshagent.Key{
			Format:  o.key.PublicKey().Type(),
			Blob:    o.blob,
			Comment: fmt.Sprintf("oslogin-agent %s expires %s", user, o.expiry.UTC().Format(time.RFC3339)),
		})
	}
	return keys, nil
}

// Sign signs with flags 0; see SignWithFlags.
func (c *conn) Sign(key ssh.PublicKey, data []byte) (*ssh.Signature, error) {
	return c.SignWithFlags(key, data, 0)
}

// SignWithFlags answers SSH_AGENTC_SIGN_REQUEST with one of the offered
// keys. For RSA keys the flags pick the hash as OpenSSH does:
// SSH_AGENT_RSA_SHA2_256 wins over SSH_AGENT_RSA_SHA2_512, and no flag means
// ssh-rsa (SHA-1); other keys ignore the flags. The keyring is read under a
// read lock, the signature itself is made without any agent lock, so
// connections sign in parallel. Every request produces one log record.
func (c *conn) SignWithFlags(key ssh.PublicKey, data []byte, flags sshagent.SignatureFlags) (*ssh.Signature, error) {
	start := time.Now()
	fp := ssh.FingerprintSHA256(key)
	sig, algorithm, hc, err := c.sign(key, data, flags)
	if hc != nil {
		fp = ssh.FingerprintSHA256(hc.cert.Key) // the key that signs; the certificate is logged below
	} else if c.listed != nil && bytes.Equal(key.Marshal(), c.listed.keyBlob) {
		hc = c.listed
	}
	attrs := []slog.Attr{
		slog.String("fingerprint", fp),
		slog.String("key_type", key.Type()),
	}
	if hc != nil {
		attrs = append(attrs, slog.Group("certificate",
			slog.String("instance", hc.target.Name), slog.String("instance_id", hc.target.ID),
			slog.Uint64("serial", hc.cert.Serial), slog.String("key_id", hc.cert.KeyId),
			slog.String("valid_before", hc.validBefore.UTC().Format(time.RFC3339))))
	}
	if algorithm != "" {
		attrs = append(attrs, slog.String("algorithm", algorithm))
	}
	if n := len(c.binds); n > 0 {
		last := c.binds[n-1]
		attrs = append(attrs,
			slog.String("host_key", last.hostKeyFP),
			slog.Bool("forwarded", last.forwarded),
			slog.Int("hops", n))
	}
	if err != nil {
		attrs = append(attrs, slog.String("result", "error"), slog.String("error", err.Error()))
	} else {
		c.signed = true
		attrs = append(attrs, slog.String("result", "ok"))
	}
	attrs = append(attrs, slog.Duration("latency", time.Since(start)))
	c.log.LogAttrs(c.ctx, slog.LevelInfo, "signature", attrs...)
	return sig, err
}

func (c *conn) sign(key ssh.PublicKey, data []byte, flags sshagent.SignatureFlags) (*ssh.Signature, string, *heldCert, error) {
	if c.a.lock.isLocked() {
		return nil, "", nil, errLocked
	}
	// A request naming a held certificate is signed by the certified key.
	key, hc, err := c.resolveCert(key)
	if err != nil {
		return nil, "", nil, err
	}
	o, ok := c.a.lookup(key.Marshal(), c.a.now())
	if !ok {
		return nil, "", hc, fmt.Errorf("key %s is not offered by this agent", ssh.FingerprintSHA256(key))
	}
	algorithm := o.key.PublicKey().Type()
	if algorithm == ssh.KeyAlgoRSA {
		switch {
		case flags&sshagent.SignatureFlagRsaSha256 != 0:
			algorithm = ssh.KeyAlgoRSASHA256
		case flags&sshagent.SignatureFlagRsaSha512 != 0:
			algorithm = ssh.KeyAlgoRSASHA512
		}
	}
	// Signing is pure CPU work: as many signatures run at once as there are
	// CPUs for Go, and the others wait in arrival order (blocked senders on
	// a channel queue first come, first served). Without the gate Go's
	// scheduler runs freshly woken connections first and some wait many
	// rounds under load; throughput is the same either way, the tail is not.
	c.a.signers <- struct{}{}
	sig, err := o.key.SignWithAlgorithm(rand.Reader, data, algorithm)
	<-c.a.signers
	if err != nil {
		// The key may have been retired and destroyed since lookup.
		return nil, algorithm, hc, fmt.Errorf("sign: %w", err)
	}
	return sig, algorithm, hc, nil
}

// Add refuses SSH_AGENTC_ADD_IDENTITY and its constrained form: the
// agent's keys are its own.
func (c *conn) Add(key sshagent.AddedKey) error { return c.refuseManagement("add") }

// Remove refuses SSH_AGENTC_REMOVE_IDENTITY: the agent's keys are its own.
func (c *conn) Remove(key ssh.PublicKey) error { return c.refuseManagement("remove") }

// RemoveAll refuses SSH_AGENTC_REMOVE_ALL_IDENTITIES: the agent's keys are
// its own.
func (c *conn) RemoveAll() error { return c.refuseManagement("remove-all") }

func (c *conn) refuseManagement(op string) error {
	c.log.Info(managedKeys, "request", op)
	return errManaged
}

// Lock answers SSH_AGENTC_LOCK.
func (c *conn) Lock(passphrase []byte) error {
	if err := c.a.lock.lock(c.ctx, passphrase); err != nil {
		c.log.Info("lock refused", "error", err)
		return err
	}
	c.log.Info("agent locked")
	return nil
}

// Unlock answers SSH_AGENTC_UNLOCK. A wrong passphrase fails
// after a delay that grows with each failure, as in OpenSSH; unlocks from
// all connections take turns, so the delay holds up every guess, but not
// List or Sign.
func (c *conn) Unlock(passphrase []byte) error {
	failures, err := c.a.lock.unlock(c.ctx, passphrase, c.a.unlockDelayStep)
	if err != nil {
		c.log.Warn("unlock failed", "failures", failures, "error", err)
		return err
	}
	c.log.Info("agent unlocked")
	return nil
}

// Signers is part of the x/crypto Agent interface for in-process use; it
// would hand out private keys and is therefore refused.
func (c *conn) Signers() ([]ssh.Signer, error) {
	return nil, errors.New("keys cannot be exported")
}
