package signer

import (
	"fmt"
	"os"
	"runtime/debug"

	"golang.org/x/sys/unix"
)

// secretMem is a page-aligned mapping of its own that holds key bytes, so
// that protection applies to the key pages and nothing else (locking the
// whole process used to lock 14 MiB of binary for a few hundred bytes of
// key).
//
// Preferred is memfd_secret(2) (Linux 5.14+, on by default since 6.5,
// else secretmem.enable=1): its pages leave the kernel's direct map, so not
// even root can read them through /proc/PID/mem, ptrace or /dev/mem; they
// are locked (never swapped) and never in a core dump. Where the kernel
// refuses it, an anonymous mapping is mlocked (if RLIMIT_MEMLOCK allows),
// excluded from core dumps (MADV_DONTDUMP) and zeroed in a forked child
// (MADV_WIPEONFORK).
type secretMem struct {
	b      []byte // the whole mapping
	kind   string // "memfd_secret" or "mlock", for logs and tests
	locked bool   // the pages cannot be swapped
}

// newSecretMem maps at least n bytes of protected memory. Without
// tryMemfdSecret it goes straight to the fallback (for tests).
func newSecretMem(n int, tryMemfdSecret bool) (*secretMem, error) {
	size := (n + os.Getpagesize() - 1) / os.Getpagesize() * os.Getpagesize()
	if tryMemfdSecret {
		m, err := mapMemfdSecret(size)
		if err == nil {
			return m, nil
		}
		// ENOSYS (old kernel or other arch), ENOSYS/EPERM when disabled,
		// ENOMEM/EAGAIN over RLIMIT_MEMLOCK: fall back.
	}
	b, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil, fmt.Errorf("map memory for a key: %w", err)
	}
	m := &secretMem{b: b, kind: "mlock"}
	// Not being able to lock or mark is no reason to refuse a key: the
	// mapping is then no worse than the Go heap.
	m.locked = unix.Mlock(b) == nil
	_ = unix.Madvise(b, unix.MADV_DONTDUMP)
	_ = unix.Madvise(b, unix.MADV_WIPEONFORK) // Linux 4.14+
	return m, nil
}

func mapMemfdSecret(size int) (*secretMem, error) {
	fd, err := unix.MemfdSecret(unix.O_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("memfd_secret: %w", err)
	}
	defer unix.Close(fd) // the mapping keeps the memory
	if err := unix.Ftruncate(fd, int64(size)); err != nil {
		return nil, fmt.Errorf("memfd_secret: ftruncate: %w", err)
	}
	b, err := unix.Mmap(fd, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("memfd_secret: mmap: %w", err)
	}
	// Pages are allocated on first touch, and that is where a kernel that
	// cannot take them out of the direct map, or RLIMIT_MEMLOCK, says no:
	// with SIGBUS. Touching them now, with faults turned into panics,
	// makes that an error here rather than a crash in key generation.
	// (MADV_POPULATE_WRITE and mlock do not work on secretmem: the kernel
	// refuses to pin or populate its pages from outside.)
	if err := touch(b); err != nil {
		_ = unix.Munmap(b)
		return nil, fmt.Errorf("memfd_secret: first write: %w", err)
	}
	return &secretMem{b: b, kind: "memfd_secret", locked: true}, nil
}

// destroy zeroes and unmaps the memory. Nothing may use it afterwards.
func (m *secretMem) destroy() error {
	if m == nil || m.b == nil {
		return nil
	}
	clear(m.b)
	err := unix.Munmap(m.b)
	m.b = nil
	if err != nil {
		return fmt.Errorf("unmap key memory: %w", err)
	}
	return nil
}

// touch writes every page of b once. A fault (SIGBUS from the kernel
// refusing the page) is returned as an error instead of killing the
// process.
func touch(b []byte) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("page fault: %v", r)
		}
	}()
	for i := 0; i < len(b); i += os.Getpagesize() {
		b[i] = 0
	}
	return nil
}
