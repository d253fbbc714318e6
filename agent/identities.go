package agent

import (
	"context"
	"fmt"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
	sshagent "golang.org/x/crypto/ssh/agent"
)

// Which identities a connection is offered when certificates are on.
//
// ssh asks the agent for its identities after binding the connection to
// the server's host key (session-bind@openssh.com, OpenSSH 8.9 and later).
// The agent maps that host key onto a VM through the host keys VMs publish
// as guest attributes and offers the leased key plus at most that one VM's
// certificate, so an agent holding certificates for fifty VMs still
// offers ssh two or three identities and never runs into sshd's
// MaxAuthTries ("Too many authentication failures").
//
// Without a bind (clients older than 8.9, or ssh-add -l) the agent does not
// know the destination and lists the leased keys only: such clients can
// log in to VMs that accept imported keys but not to certificate-only ones.
//
// Forwarded agents: a connection that arrives through agent forwarding
// (its binds record a forwarding hop, or its only bind is a forwarding one)
// never causes a certificate to be signed. Otherwise any host the user
// forwards the agent to could have it mint certificates for every VM the
// user may reach. Such a connection is offered a certificate only when the
// agent already holds a valid one for the bound VM, because the user
// connected to it directly within the certificate's few minutes.

// certIdentity returns the certificate to list for this connection, if
// any: its target and certificate. Errors are logged, never returned: the
// leased keys are still listed, and ssh reports the failed login.
func (c *conn) certIdentity() *heldCert {
	store := c.a.certs
	if store == nil || len(c.binds) == 0 {
		return nil
	}
	last := c.binds[len(c.binds)-1]
	forwarded := len(c.binds) > 1 || last.forwarded
	if last.forwarded {
		return nil // no authentication bind: the destination is unknown
	}
	hostKey, err := ssh.ParsePublicKey(last.hostKey)
	if err != nil {
		return nil // bindSession parsed it before; cannot happen
	}
	ctx, cancel := context.WithTimeout(c.ctx, store.opts.Timeout)
	defer cancel()
	t, ok, err := store.opts.Targets.ByHostKey(ctx, hostKey)
	if err != nil {
		c.log.Warn("cannot tell which VM the connection is for; offering the plain key only", "host_key", last.hostKeyFP, "error", err.Error())
		return nil
	}
	if !ok || (store.opts.Mode == CertAuto && !t.CertificateRequired) {
		return nil
	}
	key := c.a.current()
	if key == nil {
		return nil
	}
	if forwarded {
		hc := store.cached(t, key.blob, c.a.now())
		c.log.Info("forwarded connection: no certificate is signed for it", "instance", t.Name, "host_key", last.hostKeyFP,
			"hops", len(c.binds), "offering_held_certificate", hc != nil)
		return hc
	}
	hc, err := store.get(ctx, t, key)
	if err != nil {
		c.log.Warn("no certificate for the connection; offering the plain key only", "instance", t.Name, "error", err.Error())
		return nil
	}
	return hc
}

// certSuffix ends the key type of every OpenSSH certificate.
const certSuffix = "-cert-v01@openssh.com"

// certKey is the agent-protocol identity of a held certificate.
func certKey(hc *heldCert) *sshagent.Key {
	return &sshagent.Key{
		Format: hc.cert.Type(),
		Blob:   hc.blob,
		Comment: fmt.Sprintf("oslogin-agent certificate for %s valid until %s", hc.target.Name,
			hc.validBefore.UTC().Format(time.RFC3339)),
	}
}

// resolveCert maps a sign request that names a certificate onto the
// certified key. It accepts only certificates the agent holds and has not
// seen expire; the key must still be offered, which the caller checks.
func (c *conn) resolveCert(key ssh.PublicKey) (ssh.PublicKey, *heldCert, error) {
	if !strings.HasSuffix(key.Type(), certSuffix) {
		return key, nil, nil
	}
	// x/crypto's server hands over the raw blob as an *agent.Key.
	pub, err := ssh.ParsePublicKey(key.Marshal())
	if err != nil {
		return nil, nil, fmt.Errorf("certificate in sign request: %w", err)
	}
	cert, ok := pub.(*ssh.Certificate)
	if !ok {
		return nil, nil, fmt.Errorf("sign request names a %s that is not a certificate", key.Type())
	}
	if c.a.certs == nil {
		return nil, nil, fmt.Errorf("certificate %s is not held by this agent (certificates are off)", ssh.FingerprintSHA256(cert.Key))
	}
	hc := c.a.certs.byBlob(cert.Marshal(), c.a.now())
	if hc == nil {
		return nil, nil, fmt.Errorf("certificate of key %s is not held by this agent or has expired", ssh.FingerprintSHA256(cert.Key))
	}
	return cert.Key, hc, nil
}

// certUnused runs when ssh hangs up. ssh asks sshd whether it would accept
// each listed identity before it has the agent sign with it, and closes its
// agent connection once authentication is over. A connection that was
// listed a certificate and ends without any signature therefore failed to
// log in with everything this agent offered: most likely the VM refused
// the certificate (its authorize check said no). The certificate is then
// dropped and the VM's record re-read, so that the next connection starts
// from what Google says now instead of repeating the refusal for the rest
// of the certificate's life and the record's 5 minutes.
func (c *conn) certUnused() {
	if c.listed == nil || c.signed || c.a.certs == nil {
		return
	}
	c.a.certs.refused(c.listed, c.log)
}
