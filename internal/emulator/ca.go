package emulator

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
)

// The OS Login certificate authority. Google signs a caller's public key
// for one VM (projects.locations.signSshPublicKey) and the VM trusts the
// CA keys it reads from metadata (oslogin/certificates). What ties a
// certificate to one VM and one account is not the certificate itself but a
// fingerprint Google records when signing: the certificate carries it as
// its first extension, the guest's principals command sends it to
// oslogin/authorize, and the server answers success only for the account
// and instance it was issued for while the certificate is valid.

// Defaults of the certificate authority.
const (
	// DefaultCertificateLifetime is Google's documented validity: "SSH
	// certificates have an expiry of five minutes".
	DefaultCertificateLifetime = 5 * time.Minute
	// certBackdate moves valid-after into the past so that a VM whose clock
	// lags the signer's a little still accepts a fresh certificate.
	certBackdate = 30 * time.Second
	// certRetention keeps an expired issuance around for this long, so that
	// authorize can still tell "expired" from "never issued" in logs; after
	// that it is dropped and the map stays small in long runs.
	certRetention = time.Hour
	// fingerprintExtension prefixes the first extension's name. The guest
	// reads the first extension name of the certificate and takes what
	// follows this prefix as the fingerprint.
	fingerprintExtension = "fingerprint@google.com="
)

// standardCertExtensions are the permissions OpenSSH grants a user
// certificate by default (ssh-keygen without -O clear). All sort after
// "fingerprint@google.com=", which matters: x/crypto writes extensions in
// sorted order (as the certificate format requires), and the guest insists
// that the fingerprint is the first one.
var standardCertExtensions = []string{
	"permit-X11-forwarding", "permit-agent-forwarding", "permit-port-forwarding",
	"permit-pty", "permit-user-rc",
}

// issuedCert is what the server remembers of one signing.
type issuedCert struct {
	email       string    // the signing caller
	instanceID  string    // the computeInstance it was signed for
	validBefore time.Time // by the emulator clock
	// wrongServiceAccount marks a certificate signed with a serviceAccount
	// that is not the instance's attached one. Google documents that it
	// still signs, and that the VM will not accept the certificate.
	wrongServiceAccount bool
}

// newCA generates the emulator's CA key. It lives only in memory: a
// restarted emulator is a new authority, and VMs fetch the CA anew.
func newCA() (ssh.Signer, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate CA key: %w", err)
	}
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		return nil, fmt.Errorf("CA signer: %w", err)
	}
	return s, nil
}

// CAPublicKey is the CA's public key as an authorized_keys line without a
// trailing newline: what oslogin/certificates serves and what sshd's
// TrustedUserCAKeys file holds. The key never changes while the emulator
// runs, so no lock is needed.
func (e *Emulator) CAPublicKey() string {
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(e.ca.PublicKey())))
}

// trustedCAsJSON is the answer of oslogin/certificates, which the guest
// agent writes to sshd's TrustedUserCAKeys.
type trustedCAsJSON struct {
	TrustedCertificateAuthorities []trustedCAJSON `json:"trustedCertificateAuthorities"`
}

type trustedCAJSON struct {
	PublicKey string `json:"publicKey"`
}

// signLocked issues a user certificate for key, valid for principal, and
// records the issuance under a fresh fingerprint. It returns the response
// line "<type>-cert-v01@openssh.com <base64> <principal>".
func (e *Emulator) signLocked(key ssh.PublicKey, principal string, rec issuedCert) (string, error) {
	now := e.nowLocked()
	e.dropOldCertsLocked(now)
	fp := rand.Text() // 26 base32 characters, 130 bits: unguessable
	ext := map[string]string{fingerprintExtension + fp: ""}
	for _, name := range standardCertExtensions {
		ext[name] = ""
	}
	var serial [8]byte
	if _, err := rand.Read(serial[:]); err != nil {
		return "", fmt.Errorf("certificate serial: %w", err)
	}
	cert := &ssh.Certificate{
		Key:             key,
		Serial:          binary.BigEndian.Uint64(serial[:]),
		CertType:        ssh.UserCert,
		KeyId:           principal,
		ValidPrincipals: []string{principal},
		ValidAfter:      uint64(now.Add(-certBackdate).Unix()),
		ValidBefore:     uint64(now.Add(e.cfg.CertificateLifetime).Unix()),
		Permissions:     ssh.Permissions{Extensions: ext},
	}
	if err := cert.SignCert(rand.Reader, e.ca); err != nil {
		return "", fmt.Errorf("sign certificate: %w", err)
	}
	rec.validBefore = time.Unix(int64(cert.ValidBefore), 0)
	e.certs[fp] = &rec
	line := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(cert)))
	return line + " " + principal, nil
}

// dropOldCertsLocked forgets issuances that expired long ago.
func (e *Emulator) dropOldCertsLocked(now time.Time) {
	for fp, c := range e.certs {
		if now.Sub(c.validBefore) > certRetention {
			delete(e.certs, fp)
		}
	}
}

// certAuthorizesLocked is authorize's fingerprint check: the fingerprint
// was issued to a for the instance in, with the instance's own service
// account, and the certificate has not expired by the emulator clock.
func (e *Emulator) certAuthorizesLocked(fp string, a *account, in *instance) bool {
	c := e.certs[fp]
	return c != nil && in != nil && c.email == a.Email && c.instanceID == in.ID &&
		!c.wrongServiceAccount && e.nowLocked().Before(c.validBefore)
}
