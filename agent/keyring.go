package agent

import (
	"bytes"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/oslogin-agent/oslogin-agent/signer"
)

// leasedKey is a key together with its registration.
type leasedKey struct {
	key        *signer.Key
	blob       []byte // wire form of the public key, for matching requests
	authorized string // the registered authorized_keys line
	registered time.Time
	// expiry is when the registration ends by this host's clock, that is
	// serverExpiry less the measured clock difference with the Registrar
	// (see ServerClock); it moves when that difference does. serverExpiry
	// is the expiry as sent, in the Registrar's clock. Both guarded by
	// Agent.mu.
	expiry       time.Time
	serverExpiry time.Time
}

func newLeasedKey(k *signer.Key, comment string) *leasedKey {
	return &leasedKey{
		key:        k,
		blob:       k.PublicKey().Marshal(),
		authorized: authorizedLine(k.PublicKey(), comment),
	}
}

// authorizedLine formats pub as one authorized_keys line without the
// trailing newline, the form the Registrar receives.
func authorizedLine(pub ssh.PublicKey, comment string) string {
	line := strings.TrimSuffix(string(ssh.MarshalAuthorizedKey(pub)), "\n")
	if comment != "" {
		line += " " + comment
	}
	return line
}

// offer is a snapshot of one key as offered to clients at a given moment.
type offer struct {
	key    *signer.Key
	blob   []byte
	expiry time.Time
}

// offered returns the keys to offer at now, in the order a client should
// try them, so that ssh succeeds on its first attempt:
//
//   - Only unexpired registrations are offered: the VM would refuse the
//     others anyway.
//   - At most two keys: the current one and the one it replaced, which is
//     still registered until shortly before its expiry. Fewer keys means
//     fewer "Too many authentication failures".
//   - For Propagation after a rotation, the previous key comes first,
//     because the new one may not have reached every VM yet; after that the
//     current key comes first.
//
// The order depends only on the clock, so it is stable between requests.
func (a *Agent) offered(now time.Time) []offer {
	a.mu.RLock()
	defer a.mu.RUnlock()
	n := len(a.keys)
	if n == 0 {
		return nil
	}
	cur := a.keys[n-1]
	var prev *leasedKey
	if n >= 2 {
		prev = a.keys[n-2]
	}
	live := func(k *leasedKey) bool { return k != nil && now.Before(k.expiry) }
	mk := func(k *leasedKey) offer { return offer{key: k.key, blob: k.blob, expiry: k.expiry} }

	var out []offer
	switch {
	case live(prev) && live(cur) && now.Before(cur.registered.Add(a.propagation)):
		out = append(out, mk(prev), mk(cur))
	default:
		if live(cur) {
			out = append(out, mk(cur))
		}
		if live(prev) {
			out = append(out, mk(prev))
		}
	}
	return out
}

// lookup finds the offered key whose public key blob is blob.
func (a *Agent) lookup(blob []byte, now time.Time) (offer, bool) {
	for _, o := range a.offered(now) {
		if bytes.Equal(o.blob, blob) {
			return o, true
		}
	}
	return offer{}, false
}

// current returns the newest registered key, or nil.
func (a *Agent) current() *leasedKey {
	a.mu.RLock()
	defer a.mu.RUnlock()
	if len(a.keys) == 0 {
		return nil
	}
	return a.keys[len(a.keys)-1]
}
