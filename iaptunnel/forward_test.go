package iaptunnel_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"

	"github.com/oslogin-agent/oslogin-agent/iaptunnel"
	"github.com/oslogin-agent/oslogin-agent/internal/emulator/iaprelay"
)

// TestListenAndForward: two TCP clients at once on the local port each get
// their own tunnel (two relay sessions) and their own echo.
func TestListenAndForward(t *testing.T) {
	e := newEnv(t, iaprelay.Options{})
	port := echoServer(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- iaptunnel.ListenAndForward(ctx, ln, target("vm1", port), e.opts(t)) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("ListenAndForward: %v", err)
		}
	})

	var wg sync.WaitGroup
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			msg := bytes.Repeat([]byte(fmt.Sprintf("client %d;", i)), 20000)
			go c.Write(msg)
			got := make([]byte, len(msg))
			if _, err := io.ReadFull(c, got); err != nil {
				t.Errorf("client %d: %v", i, err)
				return
			}
			if !bytes.Equal(got, msg) {
				t.Errorf("client %d got another stream", i)
			}
		}()
	}
	wg.Wait()
	if st := e.relay.Stats(); st.Connects != 2 {
		t.Errorf("relay saw %d sessions, want 2", st.Connects)
	}
}

// TestServePipes runs the stdio pump over real OS pipes, as a ProxyCommand
// would: what goes into stdin comes back out of stdout; stdin EOF closes
// the tunnel and Serve returns.
func TestServePipes(t *testing.T) {
	e := newEnv(t, iaprelay.Options{})
	c := dial(t, e, echoServer(t))
	inR, inW, err := osPipe(t)
	if err != nil {
		t.Fatal(err)
	}
	outR, outW, err := osPipe(t)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		done <- iaptunnel.Serve(context.Background(), c, inR, outW)
		outW.Close()
	}()
	msg := bytes.Repeat([]byte("pipe"), 50000)
	go inW.Write(msg)
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(outR, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, msg) {
		t.Fatal("stdout differs from stdin")
	}
	inW.Close()
	if err := <-done; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	if n, _ := io.Copy(io.Discard, outR); n != 0 {
		t.Fatalf("%d stray bytes on stdout", n)
	}
}
