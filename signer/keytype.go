package signer

import (
	"fmt"
	"strconv"
	"strings"
)

// KeyType names one of the key algorithms and sizes the agent can generate.
// The zero value is not a valid key type; callers that want a default should
// use [Ed25519].
type KeyType uint8

// The supported key types. RSA is limited to 3072 and 4096 bits: smaller
// moduli are below current recommendations (NIST SP 800-57 puts RSA-2048 at
// 112-bit security), and larger ones only slow down every login.
const (
	Ed25519   KeyType = iota + 1 // ssh-ed25519, the default
	ECDSAP256                    // ecdsa-sha2-nistp256
	ECDSAP384                    // ecdsa-sha2-nistp384
	RSA3072                      // ssh-rsa key, signs rsa-sha2-256/512
	RSA4096                      // ssh-rsa key, signs rsa-sha2-256/512
)

var keyTypeNames = [...]string{
	Ed25519:   "ed25519",
	ECDSAP256: "ecdsa-p256",
	ECDSAP384: "ecdsa-p384",
	RSA3072:   "rsa-3072",
	RSA4096:   "rsa-4096",
}

// KeyTypes returns every supported key type, the default first.
func KeyTypes() []KeyType {
	return []KeyType{Ed25519, ECDSAP256, ECDSAP384, RSA3072, RSA4096}
}

// Valid reports whether t is one of the supported key types.
func (t KeyType) Valid() bool {
	return t >= Ed25519 && t <= RSA4096
}

// String returns the name ParseKeyType accepts, such as "ed25519".
func (t KeyType) String() string {
	if !t.Valid() {
		return fmt.Sprintf("KeyType(%d)", uint8(t))
	}
	return keyTypeNames[t]
}

// isRSA reports whether t is one of the RSA sizes.
func (t KeyType) isRSA() bool { return t == RSA3072 || t == RSA4096 }

// validNames lists the accepted names for error messages.
func validNames() string {
	names := make([]string, 0, len(keyTypeNames))
	for _, t := range KeyTypes() {
		names = append(names, t.String())
	}
	return strings.Join(names, ", ")
}

// ParseKeyType parses a key type name as printed by [KeyType.String]. The
// match ignores case and surrounding space. RSA sizes below 3072 bits are
// refused with an error that says so.
func ParseKeyType(s string) (KeyType, error) {
	name := strings.ToLower(strings.TrimSpace(s))
	for _, t := range KeyTypes() {
		if name == t.String() {
			return t, nil
		}
	}
	if bits, ok := strings.CutPrefix(name, "rsa-"); ok {
		if n, err := strconv.Atoi(bits); err == nil && n < 3072 {
			return 0, fmt.Errorf("key type %q refused: RSA keys must have at least 3072 bits (valid types: %s)", s, validNames())
		}
	}
	if name == "rsa" {
		return 0, fmt.Errorf("key type %q needs a size: rsa-3072 or rsa-4096 (valid types: %s)", s, validNames())
	}
	return 0, fmt.Errorf("unknown key type %q (valid types: %s)", s, validNames())
}

// Set implements the flag.Value (and pflag.Value) interface, so a KeyType
// can be bound directly to a command-line flag.
func (t *KeyType) Set(s string) error {
	v, err := ParseKeyType(s)
	if err != nil {
		return err
	}
	*t = v
	return nil
}

// Type implements pflag.Value; it names the flag's value type in help text.
func (t *KeyType) Type() string { return "key-type" }

// MarshalText implements encoding.TextMarshaler.
func (t KeyType) MarshalText() ([]byte, error) {
	if !t.Valid() {
		return nil, fmt.Errorf("invalid key type %d", uint8(t))
	}
	return []byte(t.String()), nil
}

// UnmarshalText implements encoding.TextUnmarshaler.
func (t *KeyType) UnmarshalText(b []byte) error { return t.Set(string(b)) }
