package destination

import (
	"encoding/base64"
	"fmt"
	"slices"
	"strings"

	"golang.org/x/crypto/ssh"
)

// HostKeyNamespace is the guest-attribute namespace where Google's guest
// agent publishes a VM's host keys at first boot: hostkeys/<type> = base64.
const HostKeyNamespace = "hostkeys"

// hostKeyQuery is the getGuestAttributes queryPath for that namespace.
const hostKeyQuery = HostKeyNamespace + "/"

// supportedTypes are the host key types accepted, in the order lines are
// written. Certificates are refused: guest attributes carry plain keys, and
// a certificate there would smuggle in a CA nobody configured.
var supportedTypes = []string{
	ssh.KeyAlgoED25519,
	ssh.KeyAlgoECDSA256, ssh.KeyAlgoECDSA384, ssh.KeyAlgoECDSA521,
	ssh.KeyAlgoRSA,
}

// HostKeys are the verified host keys of one instance.
type HostKeys struct {
	Keys []ssh.PublicKey // in supportedTypes order, one per type
	// Rejected says, per published value that was not used, why not; for
	// messages and logs, never for trust.
	Rejected []string
}

// ParseHostKeys checks guest attributes as published host keys. Any process
// on the VM can write guest attributes, so every value is treated as
// hostile: only the hostkeys namespace; the first whitespace-separated
// field only (a newline could otherwise add a line to known_hosts); strict
// base64 that re-encodes to the same text; a key that parses and whose type
// is the one it is published under; no certificates; supported types only.
// A type published twice with different keys is dropped as ambiguous.
func ParseHostKeys(attrs []GuestAttribute) HostKeys {
	var hk HostKeys
	byType := map[string]ssh.PublicKey{}
	conflict := map[string]bool{}
	for _, a := range attrs {
		pub, err := parseHostKey(a)
		if err != nil {
			hk.Rejected = append(hk.Rejected, fmt.Sprintf("%s/%s: %v", a.Namespace, a.Key, err))
			continue
		}
		if prev, ok := byType[a.Key]; ok {
			if string(prev.Marshal()) != string(pub.Marshal()) && !conflict[a.Key] {
				conflict[a.Key] = true
				hk.Rejected = append(hk.Rejected, fmt.Sprintf("%s/%s: published twice with different keys", a.Namespace, a.Key))
			}
			continue
		}
		byType[a.Key] = pub
	}
	for _, t := range supportedTypes {
		if pub, ok := byType[t]; ok && !conflict[t] {
			hk.Keys = append(hk.Keys, pub)
		}
	}
	return hk
}

func parseHostKey(a GuestAttribute) (ssh.PublicKey, error) {
	if a.Namespace != HostKeyNamespace {
		return nil, fmt.Errorf("not in the %s namespace", HostKeyNamespace)
	}
	if strings.HasSuffix(a.Key, "-cert-v01@openssh.com") {
		return nil, fmt.Errorf("certificates are not accepted as host keys")
	}
	if !slices.Contains(supportedTypes, a.Key) {
		return nil, fmt.Errorf("unsupported key type")
	}
	fields := strings.Fields(a.Value)
	if len(fields) == 0 {
		return nil, fmt.Errorf("empty value")
	}
	b64 := fields[0]
	blob, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || base64.StdEncoding.EncodeToString(blob) != b64 {
		return nil, fmt.Errorf("value is not canonical base64")
	}
	pub, err := ssh.ParsePublicKey(blob)
	if err != nil {
		return nil, fmt.Errorf("value is not an SSH public key: %v", err)
	}
	if pub.Type() != a.Key {
		return nil, fmt.Errorf("value is a %s key, published as %s", pub.Type(), a.Key)
	}
	return pub, nil
}

// KnownHostsLines writes one known_hosts line per key, keyed by name
// exactly as given: OpenSSH looks a HostKeyAlias up verbatim, without the
// [host]:port form it uses for plain host names on other ports.
// A name with whitespace or a comma would change what the line means, so it
// yields no lines at all.
func KnownHostsLines(name string, keys []ssh.PublicKey) string {
	if name == "" || strings.ContainsAny(name, " \t\r\n,#") {
		return ""
	}
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s %s %s\n", name, k.Type(), base64.StdEncoding.EncodeToString(k.Marshal()))
	}
	return b.String()
}
