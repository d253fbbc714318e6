package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
	sshagent "golang.org/x/crypto/ssh/agent"

	"github.com/oslogin-agent/oslogin-agent/internal/agentproc"
	"github.com/oslogin-agent/oslogin-agent/internal/emulator"
	"github.com/oslogin-agent/oslogin-agent/signer"
)

// emu is an in-process OS Login emulator served on 127.0.0.1.
type emu struct {
	*emulator.Emulator
	URL   string // http://127.0.0.1:port
	Host  string // 127.0.0.1:port, the value for GCE_METADATA_HOST
	Email string // the attached service account the agent acts as
	srv   *http.Server
}

func startEmulator(cfg emulator.Config) (*emu, error) {
	e, err := emulator.New(emulator.Options{Config: cfg})
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: e.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	host := ln.Addr().String()
	return &emu{Emulator: e, URL: "http://" + host, Host: host, Email: e.Accounts()[0].Email, srv: srv}, nil
}

func (e *emu) Close() {
	e.Emulator.Close() // releases stalled requests first
	e.srv.Close()
}

// apiCalls sums the OS Login API calls (users.*) in a Calls() map.
func apiCalls(calls map[string]int) int {
	n := 0
	for m, c := range calls {
		if strings.HasPrefix(m, "users.") {
			n += c
		}
	}
	return n
}

// diffCalls returns after - before, per method.
func diffCalls(before, after map[string]int) map[string]int {
	d := map[string]int{}
	for m, c := range after {
		if c-before[m] != 0 {
			d[m] = c - before[m]
		}
	}
	return d
}

// cleanEnv is the environment of every child process: the emulator as the
// metadata server (or nothing that answers), a HOME without credentials, and
// no agent or credential variables inherited from the caller.
func cleanEnv(home, metadataHost string, extra ...string) []string {
	env := []string{"HOME=" + home, "GCE_METADATA_HOST=" + metadataHost, "LANG=C"}
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "PATH", "TMPDIR", "USER", "LOGNAME", "TERM":
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

// oslAgent is a running oslogin-agent in the foreground (-D -s).
type oslAgent struct {
	*agentproc.Process
	sock  string
	pid   int
	user  string
	ready time.Duration // process start to shell lines printed and socket answering
}

// startOslAgent runs `oslogin-agent -D -s -a sock --endpoint URL extra...`
// and waits until it printed its shell lines and its socket answers a list
// request. logs is where its log records go ("" keeps them with stderr).
func (b *bench) startOslAgent(e *emu, sock, logs string, extra ...string) (*oslAgent, error) {
	return b.startOslAgentEnv(e, sock, logs, nil, extra...)
}

// startOslAgentEnv is startOslAgent with more environment variables (such
// as OSLOGIN_EMULATOR_HOST, which makes the emulator its Compute API and
// IAP relay too).
func (b *bench) startOslAgentEnv(e *emu, sock, logs string, env []string, extra ...string) (*oslAgent, error) {
	args := []string{"-D", "-s", "-a", sock, "--endpoint", e.URL}
	if logs != "" {
		args = append(args, "--log-file", logs)
	}
	args = append(args, extra...)
	cmd := exec.Command(b.agentBin, args...)
	cmd.Env = cleanEnv(b.home, e.Host, env...)
	errLog := sock + ".stderr"
	ef, err := os.Create(errLog)
	if err != nil {
		return nil, err
	}
	defer ef.Close()
	cmd.Stderr = ef
	start := time.Now()
	p, err := agentproc.Start(cmd, 60*time.Second)
	if err != nil {
		out, _ := os.ReadFile(errLog)
		return nil, fmt.Errorf("%w: %s", err, tail(out))
	}
	a := &oslAgent{Process: p, sock: sock, pid: p.PID, user: p.Vars["OSLOGIN_USER"]}
	b.onCleanup(a.Stop)
	if err := waitAnswers(sock, 10*time.Second); err != nil {
		a.Stop()
		return nil, err
	}
	a.ready = time.Since(start)
	return a, nil
}

// tail returns the end of a process's output, for error messages.
func tail(b []byte) string {
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return strings.TrimSpace(string(b))
}

// sshAgent is OpenSSH's ssh-agent holding one key that exists nowhere else:
// the key file was deleted right after ssh-add.
type sshAgent struct {
	*agentproc.Process
	sock string
	pid  int
	pub  string // authorized_keys line of its key
}

// startSSHAgent starts `ssh-agent -D -a sock`, makes a key of type kt with
// ssh-keygen in a fresh directory, adds it and deletes the files.
func (b *bench) startSSHAgent(dir string, kt signer.KeyType) (*sshAgent, error) {
	sock := filepath.Join(dir, "ssh-agent.sock")
	cmd := exec.Command("ssh-agent", "-D", "-a", sock)
	cmd.Env = cleanEnv(b.home, "127.0.0.1:1")
	cmd.Stderr = io.Discard
	p, err := agentproc.Start(cmd, 10*time.Second)
	if err != nil {
		return nil, fmt.Errorf("ssh-agent: %w", err)
	}
	s := &sshAgent{Process: p, sock: sock, pid: p.PID}
	b.onCleanup(s.Stop)
	if err := waitAnswers(sock, 10*time.Second); err != nil {
		return nil, fmt.Errorf("ssh-agent: %w", err)
	}
	keyDir, err := os.MkdirTemp(dir, "key")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(keyDir)
	keyFile := filepath.Join(keyDir, "id")
	args := []string{"-q", "-N", "", "-C", "bench-" + kt.String(), "-f", keyFile}
	switch kt {
	case signer.Ed25519:
		args = append(args, "-t", "ed25519")
	case signer.ECDSAP256:
		args = append(args, "-t", "ecdsa", "-b", "256")
	case signer.ECDSAP384:
		args = append(args, "-t", "ecdsa", "-b", "384")
	case signer.RSA3072:
		args = append(args, "-t", "rsa", "-b", "3072")
	case signer.RSA4096:
		args = append(args, "-t", "rsa", "-b", "4096")
	default:
		return nil, fmt.Errorf("no ssh-keygen type for %v", kt)
	}
	if out, err := exec.Command("ssh-keygen", args...).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("ssh-keygen: %v: %s", err, out)
	}
	add := exec.Command("ssh-add", "-q", keyFile)
	add.Env = cleanEnv(b.home, "127.0.0.1:1", "SSH_AUTH_SOCK="+sock)
	if out, err := add.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("ssh-add: %v: %s", err, out)
	}
	pub, err := os.ReadFile(keyFile + ".pub")
	if err != nil {
		return nil, err
	}
	s.pub = strings.TrimSpace(string(pub))
	// The key now lives only in ssh-agent's memory, as oslogin-agent's does.
	for _, f := range []string{keyFile, keyFile + ".pub"} {
		if err := os.Remove(f); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// waitAnswers waits until an agent at sock answers a list request.
func waitAnswers(sock string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		_, err := listKeys(sock)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("agent at %s does not answer: %w", sock, err)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// listKeys asks the agent at sock for its keys over a fresh connection.
func listKeys(sock string) ([]*sshagent.Key, error) {
	c, err := net.Dial("unix", sock)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	return sshagent.NewClient(c).List()
}

// firstKey returns the public key the agent at sock offers first.
func firstKey(sock string) (ssh.PublicKey, error) {
	keys, err := listKeys(sock)
	if err != nil {
		return nil, err
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("agent at %s holds no key", sock)
	}
	return ssh.ParsePublicKey(keys[0].Blob)
}

// rssKiB reads a process's resident set size (VmRSS) or high-water mark
// (VmHWM) from /proc, in KiB.
func rssKiB(pid int, field string) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			f := strings.Fields(v)
			if len(f) >= 1 {
				return strconv.ParseInt(f[0], 10, 64)
			}
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, pid)
}

// rssSampler records the highest VmRSS (and the RssAnon of that moment) of
// a process while it runs.
type rssSampler struct {
	cancel   context.CancelFunc
	done     chan struct{}
	mu       sync.Mutex
	peak     int64
	peakAnon int64
}

func sampleRSS(pid int, every time.Duration) *rssSampler {
	ctx, cancel := context.WithCancel(context.Background())
	s := &rssSampler{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			rss, err1 := rssKiB(pid, "VmRSS")
			anon, err2 := rssKiB(pid, "RssAnon")
			if err1 == nil && err2 == nil {
				s.mu.Lock()
				if rss > s.peak {
					s.peak, s.peakAnon = rss, anon
				}
				s.mu.Unlock()
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return s
}

// Stop ends sampling and returns the peak VmRSS and its RssAnon, in KiB.
func (s *rssSampler) Stop() (rss, anon int64) {
	s.cancel()
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.peak, s.peakAnon
}

// runQuiet runs a command and returns its combined output on failure.
func runQuiet(cmd *exec.Cmd) error {
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %v: %s", strings.Join(cmd.Args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
