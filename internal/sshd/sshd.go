// Package sshd runs throwaway OpenSSH servers on 127.0.0.1 that take their
// keys only from OS Login, the way a GCE VM does: sshd's
// AuthorizedKeysCommand is `oslogin-emulator authorized-keys`, which asks
// the emulator's VM side. The end-to-end tests and the benchmark play the
// VM with it.
//
// A server can play one named instance of the emulator (Options.Instance)
// and, like the guest agent at first boot, publish its host keys as guest
// attributes (Options.PublishHostKeys), so clients can verify it through
// the Compute API's getGuestAttributes instead of trusting on first use.
package sshd

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Binary is where Debian installs sshd. It must be started by its absolute
// path: it re-executes itself for every connection.
const Binary = "/usr/sbin/sshd"

// Options describe one server.
type Options struct {
	// Dir holds the configuration, the host key and the log. The host key
	// is generated there unless one exists, so servers sharing a Dir share
	// a host key.
	Dir string
	// Emulator is the oslogin-emulator binary. sshd insists that the
	// command's first word and its parents be root's and not writable by
	// others, so it is started through /usr/bin/env; the binary itself
	// must be readable and executable by KeysUser.
	Emulator string
	// MetadataHost is the emulator's host:port. sshd runs the command with
	// an empty environment, so it goes on the command line.
	MetadataHost string
	// KeysUser runs the command: "nobody" when sshd runs as root; the
	// current user otherwise, since an unprivileged sshd cannot switch.
	KeysUser string
	// Instance is the emulator instance this sshd plays (NAME, numeric id
	// or ZONE/NAME); empty means the emulator's default instance. It is
	// passed to the AuthorizedKeysCommand (or principals command), so
	// logins follow that instance's grants and metadata, and names the
	// instance host keys are published for.
	Instance string
	// CertificateOnly configures sshd as the guest agent does for
	// enable-oslogin-certificates=TRUE: OS Login certificates only, no
	// AuthorizedKeysCommand (see authLines).
	CertificateOnly bool
	// HostKeyTypes are the ssh-keygen -t types of the host keys, the first
	// being Server.HostKey; default ed25519. The guest agent makes ecdsa,
	// ed25519 and rsa.
	HostKeyTypes []string
	// PublishHostKeys makes Start PUT every host key to the metadata
	// server's guest-attributes/hostkeys/<key type> as the guest agent
	// does. Unlike the agent, which only logs, Start fails when the
	// metadata server refuses (for instance with enable-guest-attributes
	// off): a test that asked for published keys must not run without
	// them. It is opt-in because publishing changes the emulator's state.
	PublishHostKeys bool
}

// Server is a running sshd.
type Server struct {
	Port     int
	LogPath  string
	HostKey  string   // the first public host key line, for known_hosts
	HostKeys []string // every public host key line, in HostKeyTypes order
	cmd      *exec.Cmd
	exited   chan struct{}
}

// Start writes the configuration, checks it with sshd -t and starts sshd
// on a free port, trying another port if one is taken meanwhile. It returns
// once sshd logs that it listens, which it does after listen(2), so a
// connection made afterwards is never refused.
func Start(opts Options) (*Server, error) {
	if strings.ContainsAny(opts.Instance, " \t\r\n\"'%") {
		return nil, fmt.Errorf("sshd: instance %q cannot go on an sshd command line", opts.Instance)
	}
	types := opts.HostKeyTypes
	if len(types) == 0 {
		types = []string{"ed25519"}
	}
	var hostKeyLines, pubs []string
	for _, typ := range types {
		hostKey := filepath.Join(opts.Dir, "ssh_host_"+typ+"_key")
		if _, err := os.Stat(hostKey); err != nil {
			if err := run(exec.Command("ssh-keygen", "-q", "-t", typ, "-N", "", "-C", "oslogin-test-host", "-f", hostKey)); err != nil {
				return nil, err
			}
		}
		pub, err := os.ReadFile(hostKey + ".pub")
		if err != nil {
			return nil, fmt.Errorf("sshd: %w", err)
		}
		hostKeyLines = append(hostKeyLines, "HostKey "+hostKey)
		pubs = append(pubs, strings.TrimSpace(string(pub)))
	}
	if os.Geteuid() == 0 {
		// sshd as root refuses to start without its privilege separation directory.
		if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
			return nil, fmt.Errorf("sshd: %w", err)
		}
	}
	keyLines, err := authLines(opts)
	if err != nil {
		return nil, err
	}
	// No Port line: -o Port= would add to it rather than replace it.
	// MaxStartups is raised because the default drops parallel logins.
	conf := fmt.Sprintf(`ListenAddress 127.0.0.1
%s
PidFile none
UsePAM no
AuthorizedKeysFile none
%sPubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
Subsystem sftp internal-sftp
MaxStartups 100:30:200
LogLevel VERBOSE
`, strings.Join(hostKeyLines, "\n"), keyLines)
	confPath := filepath.Join(opts.Dir, "sshd_config")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		return nil, fmt.Errorf("sshd: %w", err)
	}
	if err := run(exec.Command(Binary, "-t", "-f", confPath)); err != nil {
		return nil, err
	}
	for attempt := 0; attempt < 5; attempt++ {
		s, err := start(confPath, opts.Dir)
		if err == nil {
			s.HostKey, s.HostKeys = pubs[0], pubs
			if opts.PublishHostKeys {
				if err := publishHostKeys(opts.MetadataHost, opts.Instance, pubs); err != nil {
					s.Stop()
					return nil, err
				}
			}
			return s, nil
		}
		if !errors.Is(err, errPortTaken) {
			return nil, err
		}
	}
	return nil, errors.New("sshd: no free port after 5 attempts")
}

var errPortTaken = errors.New("sshd: port taken")

func start(confPath, dir string) (*Server, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	s := &Server{Port: port, LogPath: filepath.Join(dir, fmt.Sprintf("sshd-%d.log", port)), exited: make(chan struct{})}
	logf, err := os.Create(s.LogPath)
	if err != nil {
		return nil, fmt.Errorf("sshd: %w", err)
	}
	s.cmd = exec.Command(Binary, "-D", "-e", "-f", confPath, "-o", "Port="+strconv.Itoa(port))
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	err = s.cmd.Start()
	logf.Close()
	if err != nil {
		return nil, fmt.Errorf("sshd: %w", err)
	}
	go func() { s.cmd.Wait(); close(s.exited) }()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if strings.Contains(s.Log(), "Server listening on ") {
			return s, nil
		}
		select {
		case <-s.exited:
			if strings.Contains(s.Log(), "Address already in use") {
				return nil, errPortTaken
			}
			return nil, fmt.Errorf("sshd did not start:\n%s", s.Log())
		case <-time.After(10 * time.Millisecond):
		}
	}
	s.Stop()
	return nil, fmt.Errorf("sshd not listening after 10s:\n%s", s.Log())
}

// KnownHostsLine is the server's line for a client's known_hosts: host
// keys are checked, never skipped.
func (s *Server) KnownHostsLine() string {
	return fmt.Sprintf("[127.0.0.1]:%d %s", s.Port, s.HostKey)
}

// Log returns what sshd has logged so far.
func (s *Server) Log() string {
	b, _ := os.ReadFile(s.LogPath)
	return string(b)
}

// Stop terminates sshd and waits for it.
func (s *Server) Stop() {
	s.cmd.Process.Signal(syscall.SIGTERM)
	<-s.exited
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("sshd: free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func run(cmd *exec.Cmd) error {
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s: %v\n%s", strings.Join(cmd.Args, " "), err, out)
	}
	return nil
}
