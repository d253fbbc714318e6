package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
)

// CertMode says for which destinations the agent offers an OS Login
// certificate.
type CertMode int

const (
	// CertAuto uses a certificate where the VM requires one
	// (enable-oslogin-certificates, instance value over project value) and
	// the imported key elsewhere.
	CertAuto CertMode = iota
	// CertAlways uses a certificate for every destination the agent can
	// identify, next to the imported key.
	CertAlways
	// CertNever never asks for certificates: imported keys only.
	CertNever
)

// Target is one VM a connection authenticates to, as far as certificates
// are concerned.
type Target struct {
	Project, Zone, Name string
	ID                  string // numeric instance id
	ServiceAccount      string // attached service account e-mail; "" when none
	// CertificateRequired is the VM's enable-oslogin-certificates.
	CertificateRequired bool
}

func (t Target) key() string { return t.Project + "/" + t.Zone + "/" + t.ID }

// Targets maps the host key an SSH session was bound to (session-bind)
// onto the VM behind it, from host keys the VMs published as guest
// attributes. ok is false for a host key that belongs to no known VM.
type Targets interface {
	ByHostKey(ctx context.Context, hostKey ssh.PublicKey) (t Target, ok bool, err error)
}

// TargetForgetter is implemented by Targets that cache what they know of
// VMs: Forget makes the next lookup for t ask again, after t refused a
// certificate made from that knowledge.
type TargetForgetter interface {
	Forget(t Target)
}

// Certifier gets a certificate of the public key (an authorized_keys line)
// valid on one VM; package oslogin implements it with signSshPublicKey.
type Certifier interface {
	Certify(ctx context.Context, t Target, authorizedKey string) (*ssh.Certificate, error)
}

// CertOptions enable OS Login certificates. Targets and Certifier are
// required unless Mode is CertNever.
type CertOptions struct {
	Mode      CertMode
	Targets   Targets
	Certifier Certifier
	// Timeout bounds finding the target and signing, which ssh waits for
	// while it lists identities. Zero means 20s.
	Timeout time.Duration
}

// enabled reports whether certificates are in use at all.
func (o CertOptions) enabled() bool {
	return o.Mode != CertNever && o.Targets != nil && o.Certifier != nil
}

func (o CertOptions) check() error {
	if o.Mode < CertAuto || o.Mode > CertNever {
		return fmt.Errorf("invalid certificate mode %d", o.Mode)
	}
	if o.Mode != CertNever && (o.Targets == nil) != (o.Certifier == nil) {
		return errors.New("certificates need both Targets and a Certifier")
	}
	return nil
}

// heldCert is one certificate the agent holds for a target.
type heldCert struct {
	cert        *ssh.Certificate
	blob        []byte // the certificate's wire form, as listed and as sign requests name it
	keyBlob     []byte // wire form of the certified (leased) key
	target      Target
	validBefore time.Time
	refreshAt   time.Time // after this no new connection is offered it
}

// certStore holds at most one certificate per target and makes concurrent
// connections to one target share one signing call. No goroutine of its
// own: the first caller signs, later callers wait for it.
type certStore struct {
	opts CertOptions
	log  *slog.Logger
	now  func() time.Time

	mu      sync.Mutex
	held    map[string]*heldCert
	flights map[string]*certFlight
	signed  int // certificates obtained, for tests and benchmarks
}

// certFlight is one signing call in progress.
type certFlight struct {
	done chan struct{}
	hc   *heldCert
	err  error
}

func newCertStore(opts CertOptions, log *slog.Logger, now func() time.Time) *certStore {
	if opts.Timeout <= 0 {
		opts.Timeout = 20 * time.Second
	}
	return &certStore{opts: opts, log: log, now: now, held: map[string]*heldCert{}, flights: map[string]*certFlight{}}
}

// refreshMargin is how long before its expiry a certificate stops being
// offered to new connections: a quarter of its validity, at most 30s. A
// connection authenticates within seconds of listing, and sshd checks the
// certificate only then, so sessions already up are not affected.
func refreshMargin(validity time.Duration) time.Duration {
	return min(30*time.Second, validity/4)
}

// cached returns the held certificate of t for the key keyBlob while it may
// still be offered.
func (s *certStore) cached(t Target, keyBlob []byte, now time.Time) *heldCert {
	s.mu.Lock()
	defer s.mu.Unlock()
	hc := s.held[t.key()]
	if hc == nil || !bytes.Equal(hc.keyBlob, keyBlob) || !now.Before(hc.refreshAt) {
		return nil
	}
	return hc
}

// get returns a certificate of key for t, from the store or signed now.
// One call per (target, key) is in flight at a time; the others wait for
// it. A rotated key gets a new certificate on its first use (lazily).
func (s *certStore) get(ctx context.Context, t Target, key *leasedKey) (*heldCert, error) {
	if hc := s.cached(t, key.blob, s.now()); hc != nil {
		return hc, nil
	}
	fk := t.key() + " " + key.key.Fingerprint()
	s.mu.Lock()
	f, joined := s.flights[fk]
	if !joined {
		f = &certFlight{done: make(chan struct{})}
		s.flights[fk] = f
	}
	s.mu.Unlock()
	if joined {
		select {
		case <-f.done:
			return f.hc, f.err
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	// The signing outlives this caller's context (ssh may hang up) so that
	// the others waiting are not failed with it; the timeout bounds it.
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.opts.Timeout)
	f.hc, f.err = s.sign(sctx, t, key)
	cancel()
	s.mu.Lock()
	delete(s.flights, fk)
	if f.err == nil {
		s.pruneLocked(s.now())
		s.held[t.key()] = f.hc
		s.signed++
	}
	s.mu.Unlock()
	close(f.done)
	return f.hc, f.err
}

// sign asks the Certifier and checks the answer before anything is served.
func (s *certStore) sign(ctx context.Context, t Target, key *leasedKey) (*heldCert, error) {
	start := time.Now()
	cert, err := s.opts.Certifier.Certify(ctx, t, key.authorized)
	if err != nil {
		s.log.Warn("certificate refused", "instance", t.Name, "instance_id", t.ID, "project", t.Project, "zone", t.Zone,
			"fingerprint", key.key.Fingerprint(), "error", err.Error(), "latency", time.Since(start))
		return nil, fmt.Errorf("certificate for %s: %w", t.Name, err)
	}
	if !bytes.Equal(cert.Key.Marshal(), key.blob) {
		return nil, fmt.Errorf("certificate for %s certifies key %s, not the agent's %s", t.Name, ssh.FingerprintSHA256(cert.Key), key.key.Fingerprint())
	}
	validAfter := time.Unix(int64(cert.ValidAfter), 0)
	validBefore := time.Unix(int64(min(cert.ValidBefore, uint64(1<<62))), 0)
	now := s.now()
	if !now.Before(validBefore) {
		return nil, fmt.Errorf("certificate for %s arrived already expired (valid before %s, now %s): check this machine's clock",
			t.Name, validBefore.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	hc := &heldCert{cert: cert, blob: cert.Marshal(), keyBlob: key.blob, target: t, validBefore: validBefore,
		refreshAt: validBefore.Add(-refreshMargin(validBefore.Sub(validAfter)))}
	s.log.Info("certificate signed", "instance", t.Name, "instance_id", t.ID, "project", t.Project, "zone", t.Zone,
		"service_account", t.ServiceAccount, "fingerprint", key.key.Fingerprint(), "serial", cert.Serial, "key_id", cert.KeyId, "principals", cert.ValidPrincipals,
		"valid_after", validAfter.UTC().Format(time.RFC3339), "valid_before", validBefore.UTC().Format(time.RFC3339),
		"latency", time.Since(start))
	return hc, nil
}

// refused drops hc after a connection it was listed to failed to log in
// without using it, and makes the Targets re-read its VM. Only the first
// such connection warns: the others found it already dropped or replaced.
func (s *certStore) refused(hc *heldCert, log *slog.Logger) {
	t := hc.target
	s.mu.Lock()
	held := s.held[t.key()] == hc
	if held {
		delete(s.held, t.key())
	}
	s.mu.Unlock()
	if !held {
		log.Debug("certificate not used; already dropped or replaced", "instance", t.Name, "serial", hc.cert.Serial)
		return
	}
	if f, ok := s.opts.Targets.(TargetForgetter); ok {
		f.Forget(t)
	}
	sa := "no service account"
	if t.ServiceAccount != "" {
		sa = "service account " + t.ServiceAccount
	}
	log.Warn("ssh could not log in with the certificate: the VM most likely refused the certificate. Check that the VM's "+
		"attached service account is still the one the certificate names (a VM whose service account changed refuses it), "+
		"that the account still has roles/compute.osLogin on the VM, and both clocks; "+
		"the agent dropped the certificate and re-reads the VM for the next connection",
		"instance", t.Name, "instance_id", t.ID, "project", t.Project, "zone", t.Zone, "service_account", t.ServiceAccount,
		"certificate_names", sa, "serial", hc.cert.Serial, "valid_before", hc.validBefore.UTC().Format(time.RFC3339))
}

// byBlob finds an unexpired held certificate by its wire form, for sign
// requests that name a certificate.
func (s *certStore) byBlob(blob []byte, now time.Time) *heldCert {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, hc := range s.held {
		if bytes.Equal(hc.blob, blob) && now.Before(hc.validBefore) {
			return hc
		}
	}
	return nil
}

// pruneLocked forgets expired certificates, so the store stays as small as
// the set of destinations in use.
func (s *certStore) pruneLocked(now time.Time) {
	for k, hc := range s.held {
		if !now.Before(hc.validBefore) {
			delete(s.held, k)
		}
	}
}

// CertificatesSigned is how many certificates the agent has obtained.
func (a *Agent) CertificatesSigned() int {
	if a.certs == nil {
		return 0
	}
	a.certs.mu.Lock()
	defer a.certs.mu.Unlock()
	return a.certs.signed
}
