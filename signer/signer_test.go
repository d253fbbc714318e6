package signer

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

func TestGenerateAndPublicKey(t *testing.T) {
	wantFormat := map[KeyType]string{
		Ed25519:   ssh.KeyAlgoED25519,
		ECDSAP256: ssh.KeyAlgoECDSA256,
		ECDSAP384: ssh.KeyAlgoECDSA384,
		RSA3072:   ssh.KeyAlgoRSA,
		RSA4096:   ssh.KeyAlgoRSA,
	}
	wantRSABits := map[KeyType]int{RSA3072: 3072, RSA4096: 4096}
	for _, kt := range KeyTypes() {
		t.Run(kt.String(), func(t *testing.T) {
			k := sharedKey(t, kt)
			if k.Type() != kt {
				t.Errorf("Type() = %v", k.Type())
			}
			if got := k.PublicKey().Type(); got != wantFormat[kt] {
				t.Errorf("public key type %q, want %q", got, wantFormat[kt])
			}
			if got, want := k.Fingerprint(), ssh.FingerprintSHA256(k.PublicKey()); got != want {
				t.Errorf("Fingerprint() = %q, want %q", got, want)
			}
			if bits, ok := wantRSABits[kt]; ok {
				n := k.PublicKey().(ssh.CryptoPublicKey).CryptoPublicKey().(*rsa.PublicKey).N.BitLen()
				if n != bits {
					t.Errorf("RSA modulus %d bits, want %d", n, bits)
				}
			}
		})
	}
}

func TestSignVerify(t *testing.T) {
	tests := []struct {
		kt        KeyType
		algorithm string // passed to SignWithAlgorithm
		format    string // expected signature format
	}{
		{Ed25519, "", ssh.KeyAlgoED25519},
		{Ed25519, ssh.KeyAlgoED25519, ssh.KeyAlgoED25519},
		{ECDSAP256, "", ssh.KeyAlgoECDSA256},
		{ECDSAP256, ssh.KeyAlgoECDSA256, ssh.KeyAlgoECDSA256},
		{ECDSAP384, "", ssh.KeyAlgoECDSA384},
		{ECDSAP384, ssh.KeyAlgoECDSA384, ssh.KeyAlgoECDSA384},
		{RSA3072, "", ssh.KeyAlgoRSA},
		{RSA3072, ssh.KeyAlgoRSA, ssh.KeyAlgoRSA},
		{RSA3072, ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSASHA256},
		{RSA3072, ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA512},
		{RSA4096, "", ssh.KeyAlgoRSA},
		{RSA4096, ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSASHA256},
		{RSA4096, ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA512},
	}
	data := []byte("session identifier and userauth request")
	for _, tt := range tests {
		t.Run(tt.kt.String()+"/"+tt.algorithm, func(t *testing.T) {
			k := sharedKey(t, tt.kt)
			sig, err := k.SignWithAlgorithm(nil, data, tt.algorithm)
			if err != nil {
				t.Fatalf("SignWithAlgorithm: %v", err)
			}
			if sig.Format != tt.format {
				t.Errorf("signature format %q, want %q", sig.Format, tt.format)
			}
			if err := k.PublicKey().Verify(data, sig); err != nil {
				t.Errorf("Verify: %v", err)
			}
			if err := k.PublicKey().Verify(append([]byte("x"), data...), sig); err == nil {
				t.Error("signature verified over different data")
			}
			if tt.algorithm == "" {
				sig2, err := k.Sign(nil, data)
				if err != nil {
					t.Fatalf("Sign: %v", err)
				}
				if sig2.Format != tt.format {
					t.Errorf("Sign format %q, want %q", sig2.Format, tt.format)
				}
				if err := k.PublicKey().Verify(data, sig2); err != nil {
					t.Errorf("Verify(Sign): %v", err)
				}
			}
		})
	}
}

func TestSignRejectsForeignAlgorithm(t *testing.T) {
	tests := []struct {
		kt        KeyType
		algorithm string
	}{
		{Ed25519, ssh.KeyAlgoRSASHA256},
		{Ed25519, ssh.KeyAlgoECDSA256},
		{ECDSAP256, ssh.KeyAlgoECDSA384},
		{ECDSAP384, ssh.KeyAlgoED25519},
		{RSA3072, ssh.KeyAlgoED25519},
		{RSA3072, "rsa-sha2-1024"},
	}
	for _, tt := range tests {
		t.Run(tt.kt.String()+"/"+tt.algorithm, func(t *testing.T) {
			if _, err := sharedKey(t, tt.kt).SignWithAlgorithm(nil, []byte("x"), tt.algorithm); err == nil {
				t.Error("signing succeeded")
			}
		})
	}
}

// secretForms returns the private key material of k in every encoding a
// careless printer might use: raw bytes, hex, base64 and decimal.
func secretForms(t *testing.T, k *Key) [][]byte {
	t.Helper()
	var raw [][]byte
	var ints []*big.Int
	switch p := k.priv.(type) {
	case ed25519.PrivateKey:
		raw = append(raw, p.Seed())
	case *memEd25519:
		raw = append(raw, bytes.Clone(p.mem.b[:ed25519.SeedSize]))
	case *ecdsa.PrivateKey:
		//lint:ignore SA1019 the exported copy of the scalar is what Destroy wipes
		ints = append(ints, p.D)
	case *rsa.PrivateKey:
		ints = append(ints, p.D, p.Primes[0], p.Primes[1], p.Precomputed.Dp, p.Precomputed.Dq)
	default:
		t.Fatalf("unexpected private key type %T", k.priv)
	}
	var forms [][]byte
	for _, n := range ints {
		raw = append(raw, n.Bytes())
		forms = append(forms, []byte(n.String()), []byte(n.Text(16)))
	}
	for _, b := range raw {
		// A 16-byte window is enough to recognise a leak and also catches
		// partial prints.
		w := b[:16]
		forms = append(forms, w, []byte(hex.EncodeToString(w)),
			[]byte(base64.StdEncoding.EncodeToString(b)[:16]),
			[]byte(base64.RawURLEncoding.EncodeToString(b)[:16]),
			[]byte(strings.Trim(fmt.Sprint(w), "[]")))
	}
	return forms
}

func TestNoPrivateMaterialInOutput(t *testing.T) {
	for _, kt := range KeyTypes() {
		t.Run(kt.String(), func(t *testing.T) {
			k := sharedKey(t, kt)
			var outputs []string
			for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%T %p"} {
				outputs = append(outputs, fmt.Sprintf(verb, k))
			}
			outputs = append(outputs, fmt.Sprint(k), fmt.Sprintln(k), k.String(), k.GoString())
			outputs = append(outputs, fmt.Sprintf("%+v", struct{ K *Key }{k}), fmt.Sprintf("%#v", []*Key{k}))

			for _, v := range []any{k, struct{ K *Key }{k}, map[string]*Key{"k": k}} {
				b, err := json.Marshal(v)
				if err != nil {
					t.Fatalf("json.Marshal: %v", err)
				}
				outputs = append(outputs, string(b))
			}

			var logs bytes.Buffer
			slog.New(slog.NewTextHandler(&logs, nil)).Info("text", "key", k)
			slog.New(slog.NewJSONHandler(&logs, nil)).Info("json", "key", k, slog.Any("any", k))
			outputs = append(outputs, logs.String())

			secrets := secretForms(t, k)
			for _, out := range outputs {
				for _, s := range secrets {
					if bytes.Contains([]byte(out), s) {
						t.Fatalf("output %q contains private material %q", out, s)
					}
				}
			}
			// The safe text is there, so the test is looking at real output.
			for _, out := range outputs[:4] {
				if !strings.Contains(out, k.Fingerprint()) || !strings.Contains(out, kt.String()) {
					t.Errorf("output %q lacks type and fingerprint", out)
				}
			}
			if !strings.Contains(logs.String(), `"fingerprint":"`+k.Fingerprint()+`"`) {
				t.Errorf("slog JSON output lacks the fingerprint attribute: %s", logs.String())
			}
		})
	}
}

func TestDestroy(t *testing.T) {
	for _, kt := range []KeyType{Ed25519, ECDSAP256, ECDSAP384, RSA3072} {
		t.Run(kt.String(), func(t *testing.T) {
			k, err := Generate(kt)
			if err != nil {
				t.Fatal(err)
			}
			priv := k.priv
			pub := k.PublicKey()
			if _, err := k.Sign(nil, []byte("before")); err != nil {
				t.Fatalf("Sign before Destroy: %v", err)
			}
			k.Destroy()
			k.Destroy() // idempotent
			if !k.Destroyed() {
				t.Error("Destroyed() = false")
			}
			_, err = k.Sign(nil, []byte("after"))
			if !errors.Is(err, ErrDestroyed) {
				t.Errorf("Sign after Destroy: err = %v, want ErrDestroyed", err)
			}
			if _, err := k.SignWithAlgorithm(nil, []byte("after"), ""); !errors.Is(err, ErrDestroyed) {
				t.Errorf("SignWithAlgorithm after Destroy: err = %v", err)
			}
			if !bytes.Equal(k.PublicKey().Marshal(), pub.Marshal()) || k.Fingerprint() == "" {
				t.Error("public identity lost on Destroy")
			}
			isZero := func(n *big.Int) bool {
				for _, w := range n.Bits() {
					if w != 0 {
						return false
					}
				}
				return n.Sign() == 0
			}
			switch p := priv.(type) {
			case ed25519.PrivateKey:
				if !bytes.Equal(p, make([]byte, len(p))) {
					t.Error("ed25519 private key not zeroed")
				}
			case *memEd25519:
				// Zeroed, then unmapped (TestEd25519KeyInProtectedPages
				// checks the mapping is gone).
				if p.mem.b != nil {
					t.Error("ed25519 key memory not released")
				}
			case *ecdsa.PrivateKey:
				//lint:ignore SA1019 the exported copy of the scalar is what Destroy wipes
				if !isZero(p.D) {
					t.Error("ECDSA scalar not zeroed")
				}
			case *rsa.PrivateKey:
				for name, n := range map[string]*big.Int{
					"D": p.D, "P": p.Primes[0], "Q": p.Primes[1],
					"Dp": p.Precomputed.Dp, "Dq": p.Precomputed.Dq, "Qinv": p.Precomputed.Qinv,
				} {
					if !isZero(n) {
						t.Errorf("RSA %s not zeroed", name)
					}
				}
			}
		})
	}
}

func TestConcurrentSignAndDestroy(t *testing.T) {
	k, err := Generate(Ed25519)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := range 32 {
		wg.Go(func() {
			for j := range 20 {
				data := []byte(fmt.Sprintf("%d/%d", i, j))
				sig, err := k.Sign(nil, data)
				if errors.Is(err, ErrDestroyed) {
					return
				}
				if err != nil {
					errs <- err
					return
				}
				// A signature that was produced must be valid even when
				// Destroy ran concurrently.
				if err := k.PublicKey().Verify(data, sig); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	time.Sleep(time.Millisecond)
	k.Destroy()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestSignersDoNotWaitForEachOther holds a reader slot, as a slow signature
// in progress would, and checks another signature still completes.
func TestSignersDoNotWaitForEachOther(t *testing.T) {
	k := sharedKey(t, Ed25519)
	k.mu.RLock()
	defer k.mu.RUnlock()
	done := make(chan error, 1)
	go func() {
		_, err := k.Sign(nil, []byte("concurrent"))
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a signature waited for another one in progress")
	}
}

func BenchmarkSign(b *testing.B) {
	data := bytes.Repeat([]byte{0x5a}, 256) // about the size of a userauth request
	for _, kt := range KeyTypes() {
		algorithm := ""
		if kt.isRSA() {
			algorithm = ssh.KeyAlgoRSASHA512
		}
		b.Run(kt.String(), func(b *testing.B) {
			k := sharedKey(b, kt)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := k.SignWithAlgorithm(nil, data, algorithm); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkSignParallel(b *testing.B) {
	data := bytes.Repeat([]byte{0x5a}, 256)
	for _, kt := range []KeyType{Ed25519, ECDSAP256} {
		b.Run(kt.String(), func(b *testing.B) {
			k := sharedKey(b, kt) // the first call generates every type's key
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := k.Sign(nil, data); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

func BenchmarkGenerate(b *testing.B) {
	for _, kt := range KeyTypes() {
		b.Run(kt.String(), func(b *testing.B) {
			for b.Loop() {
				k, err := Generate(kt)
				if err != nil {
					b.Fatal(err)
				}
				k.Destroy()
			}
		})
	}
}
