package emulator

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
)

// ErrNoFingerprint is AuthorizedPrincipals' refusal of a certificate whose
// first extension carries no OS Login fingerprint, or of input that is no
// certificate at all. The guest's command
// exits 1 in this case, unlike a denial (exit 0, no output).
var ErrNoFingerprint = errors.New("certificate carries no fingerprint@google.com= first extension")

// CertificateFingerprint returns the OS Login fingerprint of a certificate
// given as sshd's %k (base64 of the wire form), read as the guest reads
// it: the name of the first extension in wire order must contain
// "fingerprint@google.com=", and the fingerprint is what follows. Only the
// first extension counts, so a certificate that lists another extension
// first has no fingerprint.
func CertificateFingerprint(certBase64 string) (string, error) {
	blob, err := base64.StdEncoding.DecodeString(strings.TrimSpace(certBase64))
	if err != nil {
		return "", fmt.Errorf("certificate: not base64 (%v): %w", err, ErrNoFingerprint)
	}
	name, err := firstExtensionName(blob)
	if err != nil {
		if !errors.Is(err, ErrNoFingerprint) {
			err = fmt.Errorf("%v: %w", err, ErrNoFingerprint)
		}
		return "", err
	}
	_, fp, ok := strings.Cut(name, fingerprintExtension)
	if !ok || fp == "" {
		return "", fmt.Errorf("first extension %q: %w", name, ErrNoFingerprint)
	}
	return fp, nil
}

// firstExtensionName walks a certificate's wire form (PROTOCOL.certkeys) to
// the extensions field and returns the first name in it. x/crypto parses
// extensions into a map, which loses their order, so the walk is done here;
// x/crypto still validates the whole structure first.
func firstExtensionName(blob []byte) (string, error) {
	pub, err := ssh.ParsePublicKey(blob)
	if err != nil {
		return "", fmt.Errorf("certificate: %w", err)
	}
	cert, ok := pub.(*ssh.Certificate)
	if !ok {
		return "", fmt.Errorf("%s key is not a certificate: %w", pub.Type(), ErrNoFingerprint)
	}
	r := wireReader{b: blob}
	r.str() // certificate type
	r.str() // nonce
	// The key's own fields follow, exactly as in the plain key's wire
	// form after its type name.
	plain := cert.Key.Marshal()
	r.skip(len(plain) - (4 + len(cert.Key.Type())))
	r.skip(8 + 4) // serial, type
	r.str()       // key id
	r.str()       // valid principals
	r.skip(8 + 8) // valid after, valid before
	r.str()       // critical options
	exts := wireReader{b: r.str()}
	if r.err != nil {
		return "", fmt.Errorf("certificate: %w", r.err)
	}
	if len(exts.b) == 0 {
		return "", fmt.Errorf("certificate has no extensions: %w", ErrNoFingerprint)
	}
	name := exts.str()
	if exts.err != nil {
		return "", fmt.Errorf("certificate extensions: %w", exts.err)
	}
	return string(name), nil
}

// wireReader reads SSH wire strings; the first error sticks.
type wireReader struct {
	b   []byte
	err error
}

func (r *wireReader) skip(n int) {
	if r.err == nil && (n < 0 || n > len(r.b)) {
		r.err = errors.New("truncated")
	}
	if r.err == nil {
		r.b = r.b[n:]
	}
}

func (r *wireReader) str() []byte {
	if r.err != nil || len(r.b) < 4 {
		r.err = errors.New("truncated")
		return nil
	}
	n := binary.BigEndian.Uint32(r.b)
	if uint64(n) > uint64(len(r.b)-4) {
		r.err = errors.New("truncated")
		return nil
	}
	s := r.b[4 : 4+n]
	r.b = r.b[4+n:]
	return s
}

// AuthorizedPrincipals does what the guest's google_authorized_principals
// does for sshd's AuthorizedPrincipalsCommand (%u %k): read the
// certificate's fingerprint, look the user up (oslogin/users?username=),
// ask oslogin/authorize with policy=login and the fingerprint, and return
// the username as the one principal sshd may accept. The certificate's
// signature and validity are sshd's business (TrustedUserCAKeys); whether
// it was issued for this VM and account and is still valid is the
// server's. opts are those of AuthorizedKeys.
func AuthorizedPrincipals(ctx context.Context, opts AuthorizedKeysOptions, username, certBase64 string) (string, error) {
	fp, err := CertificateFingerprint(certBase64)
	if err != nil {
		return "", fmt.Errorf("authorized principals: %w", err)
	}
	c, done, err := newMDSClient(opts, "oslogin/")
	if err != nil {
		return "", fmt.Errorf("authorized principals: %w", err)
	}
	defer done()
	if !usernameRE.MatchString(username) {
		return "", fmt.Errorf("authorized principals: invalid username %q: %w", username, ErrUnknownUser)
	}
	code, body, err := c.get(ctx, "users?username="+url.QueryEscape(username))
	switch {
	case err != nil:
		return "", fmt.Errorf("authorized principals: look up %s: %w", username, err)
	case code == http.StatusNotFound || (code == http.StatusOK && len(body) == 0):
		return "", fmt.Errorf("authorized principals: %s: %w", username, ErrUnknownUser)
	case code != http.StatusOK:
		return "", fmt.Errorf("authorized principals: look up %s: HTTP %d", username, code)
	}
	name, ok := profileName(body)
	if !ok {
		return "", fmt.Errorf("authorized principals: %s: no profile name: %w", username, ErrUnknownUser)
	}
	code, authz, err := c.get(ctx, "authorize?email="+url.QueryEscape(name)+"&policy=login&fingerprint="+url.QueryEscape(fp))
	switch {
	case err != nil:
		return "", fmt.Errorf("authorized principals: authorize %s: %w", username, err)
	case code != http.StatusOK:
		return "", fmt.Errorf("authorized principals: authorize %s: HTTP %d: %w", username, code, ErrLoginDenied)
	}
	var verdict struct {
		Success bool `json:"success"`
	}
	if json.Unmarshal(authz, &verdict) != nil || !verdict.Success {
		return "", fmt.Errorf("authorized principals: %s with certificate %s: %w", username, fp, ErrLoginDenied)
	}
	return username, nil
}

// TrustedCAKeys returns the CA keys of oslogin/certificates, one
// authorized_keys line each, as the guest agent writes them to sshd's
// TrustedUserCAKeys file.
func TrustedCAKeys(ctx context.Context, opts AuthorizedKeysOptions) ([]string, error) {
	c, done, err := newMDSClient(opts, "oslogin/")
	if err != nil {
		return nil, fmt.Errorf("trusted CA keys: %w", err)
	}
	defer done()
	code, body, err := c.get(ctx, "certificates")
	switch {
	case err != nil:
		return nil, fmt.Errorf("trusted CA keys: %w", err)
	case code != http.StatusOK:
		return nil, fmt.Errorf("trusted CA keys: oslogin/certificates: HTTP %d", code)
	}
	var v trustedCAsJSON
	if err := json.Unmarshal(body, &v); err != nil {
		return nil, fmt.Errorf("trusted CA keys: oslogin/certificates: %w", err)
	}
	var keys []string
	for _, ca := range v.TrustedCertificateAuthorities {
		if k := strings.TrimSpace(ca.PublicKey); k != "" {
			keys = append(keys, k)
		}
	}
	return keys, nil
}

// newMDSClient builds the guest's metadata client for paths under
// metadataPrefix+sub; done releases its idle connections.
func newMDSClient(opts AuthorizedKeysOptions, sub string) (*mdsClient, func(), error) {
	host := strings.TrimSuffix(strings.TrimPrefix(opts.MetadataHost, "http://"), "/")
	if host == "" {
		return nil, nil, errors.New("no metadata host given")
	}
	c := &mdsClient{base: "http://" + host + metadataPrefix + sub, opts: opts}
	done := func() {}
	if c.opts.Client == nil {
		c.opts.Client = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: nil}}
		done = c.opts.Client.CloseIdleConnections
	}
	return c, done, nil
}
