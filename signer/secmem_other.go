//go:build !linux

package signer

// secretMem on systems other than Linux is ordinary heap memory: the agent
// only protects key pages on Linux.
type secretMem struct {
	b      []byte
	kind   string
	locked bool
}

func newSecretMem(n int, _ bool) (*secretMem, error) {
	return &secretMem{b: make([]byte, n), kind: "heap"}, nil
}

func (m *secretMem) destroy() error {
	if m != nil {
		clear(m.b)
		m.b = nil
	}
	return nil
}
