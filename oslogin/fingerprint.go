package oslogin

import (
	"crypto/sha256"
	"encoding/hex"
)

// Fingerprint returns the identifier OS Login gives a key: the lowercase hex
// SHA-256 of the key string exactly as it was submitted, comment and any
// trailing newline included. It is not the OpenSSH "SHA256:" fingerprint,
// which hashes only the decoded key blob.
func Fingerprint(authorizedKey string) string {
	sum := sha256.Sum256([]byte(authorizedKey))
	return hex.EncodeToString(sum[:])
}
