package signer

import (
	"bufio"
	"crypto/ed25519"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unsafe"
)

// mapping is one entry of /proc/self/smaps.
type mapping struct {
	start, end uintptr
	path       string
	flags      []string
}

// mappingOf returns the mapping that holds addr, if any.
func mappingOf(t *testing.T, addr uintptr) (mapping, bool) {
	t.Helper()
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var cur mapping
	found := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 {
			continue
		}
		if r := strings.SplitN(fields[0], "-", 2); len(r) == 2 && !strings.HasSuffix(fields[0], ":") {
			s, err1 := strconv.ParseUint(r[0], 16, 64)
			e, err2 := strconv.ParseUint(r[1], 16, 64)
			if err1 == nil && err2 == nil {
				cur = mapping{start: uintptr(s), end: uintptr(e)}
				if len(fields) >= 6 {
					cur.path = strings.Join(fields[5:], " ")
				}
				found = cur.start <= addr && addr < cur.end
				continue
			}
		}
		if found && fields[0] == "VmFlags:" {
			cur.flags = fields[1:]
			return cur, true
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return mapping{}, false
}

// keyAddr is where an ed25519 Key's private bytes are.
func keyAddr(t *testing.T, k *Key) uintptr {
	t.Helper()
	priv, ok := k.priv.(*memEd25519)
	if !ok {
		t.Fatalf("private key is a %T", k.priv)
	}
	return uintptr(unsafe.Pointer(unsafe.SliceData(priv.mem.b)))
}

// TestEd25519KeyInProtectedPages checks that the private key bytes live in
// a mapping of their own that is locked and left out of core dumps (a
// memfd_secret mapping where the kernel offers one), that signatures still
// verify, and that Destroy unmaps it.
func TestEd25519KeyInProtectedPages(t *testing.T) {
	k, err := Generate(Ed25519)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Destroy)
	addr := keyAddr(t, k)
	m, ok := mappingOf(t, addr)
	if !ok {
		t.Fatalf("key bytes at %#x are in no mapping", addr)
	}
	t.Logf("protection %s, mapping %#x-%#x %q flags %v", k.Protection(), m.start, m.end, m.path, m.flags)
	switch k.Protection() {
	case "memfd_secret":
		if !strings.Contains(m.path, "secretmem") {
			t.Errorf("memfd_secret key in mapping %q", m.path)
		}
	case "mlock":
		for _, f := range []string{"lo", "dd"} {
			if !slices.Contains(m.flags, f) {
				t.Errorf("key mapping lacks VmFlag %q: %v", f, m.flags)
			}
		}
	default:
		t.Fatalf("ed25519 key protection %q", k.Protection())
	}
	if m.end-m.start > uintptr(os.Getpagesize()) {
		t.Errorf("key mapping is %d bytes, want one page", m.end-m.start)
	}

	sig, err := k.Sign(nil, []byte("data"))
	if err != nil {
		t.Fatal(err)
	}
	if err := k.PublicKey().Verify([]byte("data"), sig); err != nil {
		t.Errorf("signature does not verify: %v", err)
	}

	k.Destroy()
	if m, ok := mappingOf(t, addr); ok && m.start == addr {
		t.Errorf("key mapping still there after Destroy: %+v", m)
	}
}

// TestSecretMemFallback checks the mapping used where memfd_secret is not
// available: locked (the test runs with a memlock limit of at least one
// page, or as root), not dumpable, wiped on fork, and unmapped by destroy.
func TestSecretMemFallback(t *testing.T) {
	m, err := newSecretMem(ed25519.PrivateKeySize, false)
	if err != nil {
		t.Fatal(err)
	}
	addr := uintptr(unsafe.Pointer(unsafe.SliceData(m.b)))
	got, ok := mappingOf(t, addr)
	if !ok {
		t.Fatal("fallback mapping not found")
	}
	want := []string{"dd", "wf"}
	if m.locked {
		want = append(want, "lo")
	}
	for _, f := range want {
		if !slices.Contains(got.flags, f) {
			t.Errorf("fallback mapping lacks VmFlag %q: %v", f, got.flags)
		}
	}
	if err := m.destroy(); err != nil {
		t.Fatal(err)
	}
	if got, ok := mappingOf(t, addr); ok && got.start == addr {
		t.Errorf("fallback mapping still there after destroy: %+v", got)
	}
}
