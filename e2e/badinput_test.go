package e2e

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/oslogin-agent/oslogin-agent/internal/emulator"
	"github.com/oslogin-agent/oslogin-agent/internal/emulator/emulatortest"
)

// permanentKey is a key someone put on the profile without an expiry.
const permanentKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl admin@laptop"

// TestMoreBadInput completes TestBadInput: the remaining flag values that
// cannot work, a credentials file the agent may not read, socket paths that
// cannot be used, and further API refusals. Each gives one clear line on
// stderr and the right exit status, and leaves no key (but what was there
// before) and no socket.
func TestMoreBadInput(t *testing.T) {
	dir := t.TempDir()
	// Readable by nobody but its owner; the agent runs as another user
	// when the test runs as root, since root reads any file.
	unreadable := filepath.Join(dir, "unreadable.json")
	if err := os.WriteFile(unreadable, []byte(`{"type":"service_account"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(unreadable, 0); err != nil {
		t.Fatal(err)
	}
	long := filepath.Join(dir, strings.Repeat("x", 120), "agent.sock")
	tests := []badInput{
		{name: "negative propagation", args: []string{"--propagation", "-1s"}, status: 2, want: "--propagation must not be negative"},
		{name: "propagation too long for the ttl", args: []string{"--ttl", "10s", "--propagation", "5s"}, status: 2, want: "use at most 4s"},
		{name: "zero start timeout", args: []string{"--start-timeout", "0"}, status: 2, want: "--start-timeout must be positive"},
		{name: "credentials file unreadable", env: []string{"GOOGLE_APPLICATION_CREDENTIALS=" + unreadable}, asOther: true, status: 1, want: "permission denied"},
		{name: "socket path too long", args: []string{"-a", long}, status: 1, want: "Unix sockets allow at most 107"},
		{name: "socket directory is a file", args: []string{"-a", filepath.Join(unreadable, "agent.sock")}, status: 1, want: "is not a directory"},
		{name: "socket path is a directory", args: []string{"-a", dir}, status: 1, want: "is not a socket; refusing to replace it"},
		{name: "OS Login rejects the token", fault: &emulator.Fault{Methods: emulator.FaultWrite, Status: 401}, status: 1, want: "credentials rejected"},
		{name: "profile full of keys that never expire", config: func(c *emulator.Config) { c.ProfileLimit = len(permanentKey) + 40 },
			seed: true, status: 1, want: "holds no expired keys"},
		{name: "endpoint not a URL", args: []string{"--endpoint", "not-a-url"}, status: 2, want: `--endpoint "not-a-url" is not an http:// or https:// URL`},
		{name: "endpoint with another scheme", args: []string{"--endpoint", "ftp://127.0.0.1/"}, status: 2, want: "is not an http:// or https:// URL"},
		{name: "log level", args: []string{"--log-level", "chatty"}, status: 2, want: "want debug, info, warn or error"},
		{name: "emulator variable not loopback", env: []string{"OSLOGIN_EMULATOR_HOST=192.0.2.1:8085"}, status: 2, want: "is not a loopback host:port"},
		{name: "remote endpoint while the emulator is set", emuVar: true, args: []string{"--endpoint", "https://oslogin.googleapis.com/"},
			status: 2, want: "is not on this machine, but OSLOGIN_EMULATOR_HOST is set"},
		{name: "credentials naming Google while the emulator is set", emuVar: true, googleKey: true,
			status: 1, want: "refused to connect beyond this machine"},
		{name: "local metadata server without the emulator variable", noEndpoint: true, status: 2,
			want: "so a local token would be sent to Google; set OSLOGIN_EMULATOR_HOST="},
		{name: "no emulator at OSLOGIN_EMULATOR_HOST", noEndpoint: true, env: []string{"OSLOGIN_EMULATOR_HOST=127.0.0.1:1"}, status: 1,
			want: "nothing answers at OSLOGIN_EMULATOR_HOST=127.0.0.1:1: start oslogin-emulator"},
		{name: "service-account key broken", env: []string{"GOOGLE_APPLICATION_CREDENTIALS=" + brokenKey(t, dir)},
			status: 1, want: "is broken: its private_key is not PEM-encoded; nothing was sent to Google"},
	}
	for _, tc := range tests {
		t.Run(tc.name, tc.check)
	}
}

// badInput is one invocation of the agent that cannot work, and what the
// agent must answer.
type badInput struct {
	name    string
	args    []string
	env     []string
	asOther bool // run as nobody when root
	config  func(*emulator.Config)
	seed    bool // a permanent key is on the profile beforehand
	fault   *emulator.Fault
	// emuVar sets OSLOGIN_EMULATOR_HOST to the emulator; googleKey points
	// GOOGLE_APPLICATION_CREDENTIALS at a key whose token_uri is Google's.
	emuVar, googleKey bool
	noEndpoint        bool // no --endpoint: GCE_METADATA_HOST alone names the emulator
	status            int
	want              string // in the last stderr line
}

// check runs the agent with the case's input against a fresh emulator: the
// exit status, one "oslogin-agent: " line mentioning want, no socket left,
// and no key registered but what was there before.
func (tc badInput) check(t *testing.T) {
	cfg := emulator.DefaultConfig()
	if tc.config != nil {
		tc.config(&cfg)
	}
	srv := emulatortest.Start(t, cfg)
	email := cfg.Accounts[0].Email
	before := 0
	if tc.seed {
		if _, err := srv.Emulator.ImportKey(email, "", permanentKey, time.Time{}); err != nil {
			t.Fatal(err)
		}
		before = 1
	}
	if tc.fault != nil {
		srv.Emulator.SetFault(*tc.fault)
	}
	v := &vm{emu: srv, email: email}
	sockDir := t.TempDir()
	sock := filepath.Join(sockDir, "agent.sock")
	args := []string{"-D", "-a", sock, "--start-timeout", "10s"}
	if !tc.noEndpoint {
		args = append(args, "--endpoint", srv.URL)
	}
	args = append(args, tc.args...)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bins.agent, args...)
	env := tc.env
	if tc.emuVar {
		env = append(env, "OSLOGIN_EMULATOR_HOST="+srv.Host)
	}
	if tc.googleKey {
		b, err := srv.Emulator.ServiceAccountKeyJSON(email, "https://oauth2.googleapis.com/token")
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(t.TempDir(), "key.json")
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		env = append(env, "GOOGLE_APPLICATION_CREDENTIALS="+path)
	}
	cmd.Env = v.agentEnv(env...)
	if tc.asOther && os.Geteuid() == 0 {
		// nobody needs a directory of its own for the socket.
		if err := os.Chmod(filepath.Dir(sockDir), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(sockDir, 65534, 65534); err != nil {
			t.Fatal(err)
		}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != tc.status {
		t.Fatalf("exit %v, want status %d\nstderr: %s", err, tc.status, stderr.String())
	}
	msg := lastLine(stderr.String())
	if !strings.HasPrefix(msg, "oslogin-agent: ") || !strings.Contains(msg, tc.want) {
		t.Fatalf("last stderr line %q; want an oslogin-agent error mentioning %q", msg, tc.want)
	}
	for _, noise := range []string{"oslogin: ", "agent: ", "googleapi:", `Post "`, `Get "`, "alt=json"} {
		if strings.Contains(strings.TrimPrefix(msg, "oslogin-agent: "), noise) {
			t.Errorf("the message shows %q, a package prefix or raw URL: %s", noise, msg)
		}
	}
	if _, err := os.Stat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket left behind: %v", err)
	}
	if n := len(srv.Emulator.Keys(email)); n != before {
		t.Fatalf("%d keys registered after the failure, want %d", n, before)
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// brokenKey writes a service-account key file whose private key is not one.
func brokenKey(t *testing.T, dir string) string {
	p := filepath.Join(dir, "broken-sa.json")
	content := `{"type":"service_account","client_email":"a@b.iam.gserviceaccount.com","private_` + `key":"garbage","token_uri":"http://127.0.0.1:1/token"}`
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
