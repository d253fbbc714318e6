// Package oslogin owns everything oslogin-agent says to Google: finding the
// caller's credentials and identity (Application Default Credentials), and
// the OS Login API calls that lease a public key to the account — import with
// an expiry, extend that expiry, delete, and prune keys that have already
// expired when the login profile is full.
//
// A *Client satisfies agent.Registrar. It speaks only in authorized_keys
// lines: OS Login identifies a key by the lowercase hex SHA-256 of the exact
// key string it stored, so the client computes that fingerprint locally from
// the very line it sends and checks that the profile OS Login returns really
// holds it. A 200 answer without the key means an administrator's policy
// blocks key management, and is reported as such rather than as success.
//
// Transient failures (408, 429, 5xx, broken connections) are retried with
// exponential backoff and jitter, honouring Retry-After; 400, 401, 403 and 404
// are not, and a 403 comes back as an error that names the scope or IAM role
// that is missing.
package oslogin
