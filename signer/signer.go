// Package signer owns the agent's private keys. It generates them in memory
// with crypto/rand, signs with them, and destroys them; nothing leaves the
// package but public keys and signatures.
//
// # Non-exportable by construction
//
// A [Key] has no exported field and no method that returns private material.
// Its String, GoString, Format (every fmt verb), MarshalText (and so
// encoding/json) and LogValue (log/slog) all print the same safe text: the
// key type and its SHA256 fingerprint. There is no constructor from existing
// key material either: every key is born here and dies here.
//
// # Where the key bytes live
//
// An ed25519 key (the default type) is generated straight into a page of
// its own, mapped for that key alone:
//   - memfd_secret(2) where the kernel offers it (Linux 5.14+; on by default
//     since 6.5, else boot with secretmem.enable=1): the page is taken out of
//     the kernel's direct map, so neither root nor the kernel on a process's
//     behalf can read it through /proc/PID/mem, ptrace or /dev/mem; it is
//     locked in RAM and left out of core dumps.
//   - otherwise an anonymous mapping that is mlocked (when RLIMIT_MEMLOCK
//     allows one page; see [Key.Protection]), marked MADV_DONTDUMP and
//     MADV_WIPEONFORK.
//
// ECDSA and RSA keys live on the Go heap: their big.Int values cannot be
// placed in memory of our own, and keeping a serialized copy in a protected
// page would protect nothing the heap copy does not expose. They are
// neither locked nor kept out of the direct map.
//
// # What Destroy can and cannot do
//
// [Key.Destroy] overwrites the private key bytes this package holds (the
// ed25519 page, which it then unmaps; the ECDSA scalar; the RSA private
// exponent, primes and CRT values, word by word through big.Int.Bits) and
// drops every reference to them. After Destroy, signing fails with
// [ErrDestroyed].
//
// Go gives no stronger guarantee than that, and this package does not claim
// one:
//   - crypto/ed25519 signs only from heap memory (it caches an expanded form
//     of each key under a weak pointer to the key's bytes). Each ed25519
//     signature therefore copies the key into a fresh heap buffer, which is
//     cleared afterwards; the library's expanded copy (seed, scalar and
//     prefix) stays on the heap, released to the garbage collector but not
//     zeroed, and so does the transient expansion made once at generation.
//   - crypto/ecdsa keeps an internal FIPS-module copy per key, and
//     crypto/rsa one in an unexported field of PrecomputedValues: released
//     to the garbage collector, not zeroed.
//   - The garbage collector may have copied heap objects before Destroy ran,
//     and big.Int arithmetic leaves intermediate values in memory that is
//     freed, not cleared.
//   - Signing puts key-dependent values on goroutine stacks, which Go neither
//     clears nor lets us clear.
//
// The protected page keeps the key's long-lived copy out of swap, core
// dumps and (with memfd_secret) reach of root; the copies above are
// short-lived in the sense that the heap reuses their memory, not that
// anything wipes it. Destroy shortens the time key material is present in
// memory; it does not make memory forensics impossible.
package signer

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"sync"

	"golang.org/x/crypto/ssh"
)

// ErrDestroyed is returned by the signing methods of a destroyed Key.
var ErrDestroyed = errors.New("key destroyed")

// Key is a private key held in memory. It implements [ssh.Signer] and
// [ssh.AlgorithmSigner]. Signing is safe for concurrent use and concurrent
// signatures do not wait for each other; only Destroy waits for signatures
// in progress.
type Key struct {
	typ KeyType
	pub ssh.PublicKey
	fp  string

	// mu is read-held while signing and write-held by Destroy, so that key
	// material is never wiped under a signature in progress.
	mu        sync.RWMutex
	destroyed bool
	priv      crypto.Signer // the standard library key; never returned
	signer    ssh.AlgorithmSigner
	wipe      func()
	mem       *secretMem // the protected pages holding an ed25519 key; nil for other types
}

// Compile-time checks of the interfaces Key promises.
var (
	_ ssh.Signer          = (*Key)(nil)
	_ ssh.AlgorithmSigner = (*Key)(nil)
	_ fmt.Formatter       = (*Key)(nil)
	_ fmt.Stringer        = (*Key)(nil)
	_ fmt.GoStringer      = (*Key)(nil)
	_ slog.LogValuer      = (*Key)(nil)
)

// Generate creates a new key of type t from crypto/rand.
func Generate(t KeyType) (*Key, error) {
	var (
		priv crypto.Signer
		wipe func()
		mem  *secretMem
	)
	switch t {
	case Ed25519:
		var err error
		if mem, err = newSecretMem(ed25519.PrivateKeySize, true); err != nil {
			return nil, fmt.Errorf("generate %s key: %w", t, err)
		}
		k, err := newEd25519In(mem)
		if err != nil {
			_ = mem.destroy()
			return nil, fmt.Errorf("generate %s key: %w", t, err)
		}
		priv, wipe = k, func() { _ = mem.destroy() }
	case ECDSAP256, ECDSAP384:
		curve := elliptic.P256()
		if t == ECDSAP384 {
			curve = elliptic.P384()
		}
		k, err := ecdsa.GenerateKey(curve, rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("generate %s key: %w", t, err)
		}
		// D is the only exported copy of the scalar; the crypto package
		// keeps its own, which no API can reach (see the package doc).
		//lint:ignore SA1019 wiping the secret is the one thing D is still needed for
		priv, wipe = k, func() { wipeInt(k.D) }
	case RSA3072, RSA4096:
		bits := 3072
		if t == RSA4096 {
			bits = 4096
		}
		k, err := rsa.GenerateKey(rand.Reader, bits)
		if err != nil {
			return nil, fmt.Errorf("generate %s key: %w", t, err)
		}
		priv, wipe = k, func() { wipeRSA(k) }
	default:
		return nil, fmt.Errorf("cannot generate key of type %v (valid types: %s)", t, validNames())
	}
	s, err := ssh.NewSignerFromSigner(priv)
	if err != nil {
		wipe()
		return nil, fmt.Errorf("wrap %s key: %w", t, err)
	}
	as, ok := s.(ssh.AlgorithmSigner)
	if !ok {
		wipe()
		return nil, fmt.Errorf("%s signer does not support signature algorithms", t)
	}
	return &Key{
		typ:    t,
		pub:    s.PublicKey(),
		fp:     ssh.FingerprintSHA256(s.PublicKey()),
		priv:   priv,
		signer: as,
		wipe:   wipe,
		mem:    mem,
	}, nil
}

// memEd25519 is an ed25519 key whose private bytes (seed and public half,
// as in ed25519.PrivateKey) live in protected memory. It cannot simply be
// an ed25519.PrivateKey backed by that memory: crypto/ed25519 caches its
// expanded form of each key under a weak pointer to the key's first byte,
// and weak pointers to memory outside the Go heap crash the runtime.
type memEd25519 struct {
	mem *secretMem
	pub ed25519.PublicKey
}

// newEd25519In generates an ed25519 key inside mem. The seed is read
// straight into mem; the standard library's expansion of it exists on the
// heap for a moment and is cleared at once.
func newEd25519In(mem *secretMem) (*memEd25519, error) {
	k := mem.b[:ed25519.PrivateKeySize:ed25519.PrivateKeySize]
	if _, err := io.ReadFull(rand.Reader, k[:ed25519.SeedSize]); err != nil {
		return nil, fmt.Errorf("read random seed: %w", err)
	}
	full := ed25519.NewKeyFromSeed(k[:ed25519.SeedSize])
	copy(k[ed25519.SeedSize:], full[ed25519.SeedSize:])
	clear(full)
	pub := make(ed25519.PublicKey, ed25519.PublicKeySize)
	copy(pub, k[ed25519.SeedSize:])
	return &memEd25519{mem: mem, pub: pub}, nil
}

// Public implements crypto.Signer.
func (k *memEd25519) Public() crypto.PublicKey { return k.pub }

// Sign implements crypto.Signer. crypto/ed25519 only signs from heap
// memory, so the key is copied into a fresh heap buffer for the one
// signature and the buffer is cleared afterwards. The library's expanded
// copy derived from it (cached until the buffer is collected) and the
// values on the signing goroutine's stack are not cleared: Go offers no way
// to. Key.Destroy serializes with Sign, so the memory is mapped here.
func (k *memEd25519) Sign(r io.Reader, msg []byte, opts crypto.SignerOpts) ([]byte, error) {
	scratch := make(ed25519.PrivateKey, ed25519.PrivateKeySize)
	defer clear(scratch)
	copy(scratch, k.mem.b[:ed25519.PrivateKeySize])
	return scratch.Sign(r, msg, opts)
}

// Protection says how the private key bytes this package holds are
// protected: "memfd_secret" (outside the kernel's direct map, locked, not
// dumpable), "mlock" (locked, not dumpable, wiped on fork), "mlock-failed"
// (not dumpable, but RLIMIT_MEMLOCK kept it from being locked), or "heap"
// (ECDSA and RSA keys, and other systems than Linux: see the package
// documentation).
func (k *Key) Protection() string {
	switch {
	case k.mem == nil:
		return "heap"
	case k.mem.kind == "mlock" && !k.mem.locked:
		return "mlock-failed"
	}
	return k.mem.kind
}

// Type returns the key's type.
func (k *Key) Type() KeyType { return k.typ }

// PublicKey returns the public half of the key. It stays valid after Destroy.
func (k *Key) PublicKey() ssh.PublicKey { return k.pub }

// Fingerprint returns the OpenSSH SHA256 fingerprint, "SHA256:" followed by
// unpadded base64, as ssh-add -l prints it.
func (k *Key) Fingerprint() string { return k.fp }

// Sign signs data with the algorithm that matches the key's format, as the
// ssh.Signer contract requires: ssh-ed25519, ecdsa-sha2-nistp256/384, and
// for RSA keys ssh-rsa, that is RSA with SHA-1. That is also what an OpenSSH
// agent does for a sign request without flags; current OpenSSH clients
// always set a flag asking for rsa-sha2-256 or rsa-sha2-512, and callers
// that can choose should use SignWithAlgorithm.
func (k *Key) Sign(r io.Reader, data []byte) (*ssh.Signature, error) {
	return k.SignWithAlgorithm(r, data, "")
}

// SignWithAlgorithm signs data with the named signature algorithm. An empty
// algorithm means the key's default (see Sign). RSA keys accept
// rsa-sha2-512, rsa-sha2-256 and ssh-rsa; other keys accept only their own
// format. A nil r means crypto/rand.
func (k *Key) SignWithAlgorithm(r io.Reader, data []byte, algorithm string) (*ssh.Signature, error) {
	if r == nil {
		r = rand.Reader
	}
	k.mu.RLock()
	defer k.mu.RUnlock()
	if k.destroyed {
		return nil, fmt.Errorf("%w: %s %s", ErrDestroyed, k.typ, k.fp)
	}
	sig, err := k.signer.SignWithAlgorithm(r, data, algorithm)
	if err != nil {
		return nil, fmt.Errorf("sign with %s %s: %w", k.typ, k.fp, err)
	}
	return sig, nil
}

// Destroy overwrites the private key material and makes every later
// signature fail with ErrDestroyed. It waits for signatures in progress and
// is safe to call more than once. See the package documentation for what Go
// cannot guarantee about copies of the key.
func (k *Key) Destroy() {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.destroyed {
		return
	}
	k.destroyed = true
	k.wipe()
	k.wipe = nil
	k.priv = nil
	k.signer = nil
}

// Destroyed reports whether Destroy has been called.
func (k *Key) Destroyed() bool {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return k.destroyed
}

// String returns the key type and fingerprint, e.g.
// "ed25519 SHA256:...", and nothing else.
func (k *Key) String() string {
	if k == nil {
		return "<nil signer.Key>"
	}
	return k.typ.String() + " " + k.fp
}

// GoString returns the same text as String, so %#v cannot reach the
// unexported fields.
func (k *Key) GoString() string { return k.String() }

// Format implements fmt.Formatter: every verb, including %v, %+v, %#v, %s,
// %q and %x, prints the String text and nothing else.
func (k *Key) Format(f fmt.State, verb rune) {
	_, _ = io.WriteString(f, k.String())
}

// MarshalText implements encoding.TextMarshaler with the String text, so
// encoding/json and similar encoders print the identity, never the key.
func (k *Key) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// LogValue implements slog.LogValuer: a group with the key type and
// fingerprint.
func (k *Key) LogValue() slog.Value {
	if k == nil {
		return slog.StringValue("<nil signer.Key>")
	}
	return slog.GroupValue(
		slog.String("type", k.typ.String()),
		slog.String("fingerprint", k.fp),
	)
}

// wipeInt overwrites the words of x and leaves it zero.
func wipeInt(x *big.Int) {
	if x == nil {
		return
	}
	clear(x.Bits())
	x.SetInt64(0)
}

// wipeRSA overwrites every private value of an RSA key that is reachable
// through exported fields.
func wipeRSA(k *rsa.PrivateKey) {
	wipeInt(k.D)
	for _, p := range k.Primes {
		wipeInt(p)
	}
	wipeInt(k.Precomputed.Dp)
	wipeInt(k.Precomputed.Dq)
	wipeInt(k.Precomputed.Qinv)
	// CRTValues is only filled for multi-prime keys, which Generate never
	// makes.
}
