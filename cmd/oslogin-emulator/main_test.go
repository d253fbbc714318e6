package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/oslogin-agent/oslogin-agent/internal/emulator"
	"github.com/oslogin-agent/oslogin-agent/internal/emulator/emulatortest"
	"github.com/oslogin-agent/oslogin-agent/internal/testenv"
)

// childEnv makes the test binary behave as oslogin-emulator, so the tests
// run the real program without a separate build.
const childEnv = "OSLOGIN_EMULATOR_TEST_AS_MAIN"

// TestMain isolates the tests (and re-executed children) from the machine's
// credentials and metadata server first, then either runs the tests or acts
// as the program.
func TestMain(m *testing.M) {
	cleanup, err := testenv.Isolate()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	var code int
	if os.Getenv(childEnv) == "1" {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		code = run(ctx, os.Args[1:], os.Stdout, os.Stderr, os.Getenv)
		stop()
	} else {
		code = m.Run()
	}
	cleanup()
	os.Exit(code)
}

// program returns the test binary set up to run as oslogin-emulator with an
// otherwise empty environment, as sshd runs its AuthorizedKeysCommand.
func program(t *testing.T, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = []string{childEnv + "=1"}
	return cmd
}

var addrLine = regexp.MustCompile(`^export OSLOGIN_EMULATOR_HOST=(127\.0\.0\.1:\d+)\n$`)

// TestServe runs the program, reads its address line, uses it as a
// metadata server and API, runs authorized-keys against it, and stops it.
func TestServe(t *testing.T) {
	keyFile := filepath.Join(t.TempDir(), "key.json")
	cmd := program(t, "--listen", "127.0.0.1:0", "--write-key-file", keyFile,
		"--user", "ops@example.com", "--admin-login", "ops@example.com", "--username", "ops@example.com=ops",
		"--user", "guest@example.com")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	lines := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(stdout).ReadString('\n')
		lines <- line
		io.Copy(io.Discard, stdout)
	}()
	var line string
	select {
	case line = <-lines:
	case <-time.After(10 * time.Second):
		t.Fatalf("no address line; stderr: %s", stderr.String())
	}
	m := addrLine.FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("stdout line %q; stderr: %s", line, stderr.String())
	}
	addr := m[1]

	// The metadata root answers like GCE's.
	resp, err := http.Get("http://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Metadata-Flavor") != "Google" {
		t.Errorf("GET /: %d %v", resp.StatusCode, resp.Header)
	}
	// The key file was written for the attached account and this address.
	var kf map[string]string
	if b, err := os.ReadFile(keyFile); err != nil || json.Unmarshal(b, &kf) != nil {
		t.Fatalf("key file: %v", err)
	}
	if kf["client_email"] != "agent@emulator-project.iam.gserviceaccount.com" || kf["token_uri"] != "http://"+addr+"/token" {
		t.Errorf("key file %v", kf)
	}

	// Flags became accounts; seed keys through the admin API and the API.
	ctx := context.Background()
	admin := emulator.NewAdminClient(addr)
	accounts, err := admin.Accounts(ctx)
	if err != nil || len(accounts) != 3 || accounts[1].Username != "ops" || !accounts[1].AdminLogin || accounts[2].Login {
		t.Fatalf("accounts %+v, %v", accounts, err)
	}
	key := "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl ops@laptop"
	for _, email := range []string{"ops@example.com", "guest@example.com"} {
		tok, err := admin.MintToken(ctx, email)
		if err != nil {
			t.Fatal(err)
		}
		req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/v1/users/"+email+":importSshPublicKey?projectId=emulator-project",
			strings.NewReader(`{"key":"`+key+`"}`))
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("import for %s: %d", email, resp.StatusCode)
		}
	}

	// authorized-keys, with an empty environment, as sshd runs it.
	for _, tt := range []struct{ user, out string }{
		{"ops", key + "\n"},
		{"guest_example_com", ""}, // may not log in
		{"nobody", ""},
	} {
		var out, errb bytes.Buffer
		ak := program(t, "authorized-keys", "--metadata-host", addr, tt.user)
		ak.Stdout, ak.Stderr = &out, &errb
		if err := ak.Run(); err != nil {
			t.Errorf("authorized-keys %s: %v (%s)", tt.user, err, errb.String())
		}
		if out.String() != tt.out {
			t.Errorf("authorized-keys %s printed %q, want %q", tt.user, out.String(), tt.out)
		}
	}

	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("exit after SIGINT: %v; stderr: %s", err, stderr.String())
	}
}

// TestRefusesNonLoopback: the program will not listen beyond loopback
// unless told, and says why.
func TestRefusesNonLoopback(t *testing.T) {
	var stderr bytes.Buffer
	cmd := program(t, "--listen", "0.0.0.0:0")
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != exitFailure || len(out) != 0 ||
		!strings.Contains(stderr.String(), "--allow-non-loopback") {
		t.Errorf("0.0.0.0: %v, stdout %q, stderr %q", err, out, stderr.String())
	}
	for _, addr := range []string{"[::]:0", ":0", "192.0.2.1:0", "example.com:0"} {
		var o, e bytes.Buffer
		if code := run(context.Background(), []string{"--listen", addr}, &o, &e, noEnv); code != exitFailure || o.Len() != 0 ||
			!strings.Contains(e.String(), "not a loopback address") {
			t.Errorf("%s: exit %d, stderr %q", addr, code, e.String())
		}
	}
}

// TestServeInProcess covers the serve path under the race detector and
// coverage: it starts, answers, and stops when the context ends.
func TestServeInProcess(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"--listen", "localhost:0", "--project", "demo", "--log-level", "debug"}, pw, io.Discard, noEnv)
		pw.Close()
	}()
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	go io.Copy(io.Discard, pr)
	addr := strings.TrimSpace(strings.TrimPrefix(line, "export OSLOGIN_EMULATOR_HOST="))
	req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/computeMetadata/v1/project/project-id", nil)
	req.Header.Set("Metadata-Flavor", "Google")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "demo" {
		t.Errorf("project id %q", b)
	}
	cancel()
	select {
	case code := <-done:
		if code != exitOK {
			t.Errorf("exit %d", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("did not stop")
	}
}

func TestAuthorizedKeysCommand(t *testing.T) {
	cfg := emulator.DefaultConfig()
	cfg.Accounts = append(cfg.Accounts, emulator.Account{Email: "denied@example.com"})
	srv := emulatortest.Start(t, cfg)
	sa := srv.Emulator.Accounts()[0]
	key := "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl stored with newline\n"
	if _, err := srv.Emulator.ImportKey(sa.Email, "", key, time.Time{}); err != nil {
		t.Fatal(err)
	}
	if _, err := srv.Emulator.ImportKey("denied@example.com", "", key, time.Time{}); err != nil {
		t.Fatal(err)
	}
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	tests := []struct {
		name   string
		args   []string
		getenv func(string) string
		code   int
		out    string
	}{
		{"flag", []string{"--metadata-host", srv.Host, "sa_" + sa.UniqueID}, noEnv, 0, key + "\n"},
		{"environment", []string{"sa_" + sa.UniqueID}, env(map[string]string{"GCE_METADATA_HOST": srv.Host}), 0, key + "\n"},
		{"flag wins", []string{"--metadata-host", srv.Host, "sa_" + sa.UniqueID}, env(map[string]string{"GCE_METADATA_HOST": "127.0.0.1:1"}), 0, key + "\n"},
		{"emulator variable alone", []string{"sa_" + sa.UniqueID}, env(map[string]string{"OSLOGIN_EMULATOR_HOST": srv.Host}), 0, key + "\n"},
		{"emulator variable wins over GCE_METADATA_HOST", []string{"sa_" + sa.UniqueID},
			env(map[string]string{"OSLOGIN_EMULATOR_HOST": srv.Host, "GCE_METADATA_HOST": "127.0.0.1:1"}), 0, key + "\n"},
		{"denied", []string{"--metadata-host", srv.Host, "denied_example_com"}, noEnv, 0, ""},
		{"unknown", []string{"--metadata-host", srv.Host, "nobody"}, noEnv, 0, ""},
		{"unreachable", []string{"--metadata-host", "127.0.0.1:1", "nobody"}, noEnv, 0, ""},
		{"no host", []string{"sa_" + sa.UniqueID}, noEnv, 1, ""},
		{"no user", []string{"--metadata-host", srv.Host}, noEnv, 1, ""},
		{"two users", []string{"--metadata-host", srv.Host, "a", "b"}, noEnv, 1, ""},
		{"bad flag", []string{"--frobnicate", "a"}, noEnv, 1, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := run(context.Background(), append([]string{"authorized-keys"}, tt.args...), &out, &errb, tt.getenv)
			if code != tt.code || out.String() != tt.out {
				t.Errorf("exit %d stdout %q (stderr %q), want %d %q", code, out.String(), errb.String(), tt.code, tt.out)
			}
		})
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"--frobnicate"},
		{"stray-argument"},
		{"--login", "ghost@example.com"},
		{"--username", "no-equals-sign"},
		{"--log-level", "chatty"},
		{"--config", "/nonexistent/emulator.json"},
		{"--user", "not-an-email", "--listen", "127.0.0.1:0"},
	} {
		var o, e bytes.Buffer
		code := run(context.Background(), args, &o, &e, noEnv)
		if code == exitOK || o.Len() != 0 || e.Len() == 0 {
			t.Errorf("%q: exit %d, stdout %q, stderr %q", args, code, o.String(), e.String())
		}
	}
}

func noEnv(string) string { return "" }

// TestVersion: both spellings print one line naming the program and a
// version; the stamped value itself is checked on a release build in e2e.
func TestVersion(t *testing.T) {
	for _, args := range [][]string{{"--version"}, {"--log-level", "info", "--version"}} {
		var o, e bytes.Buffer
		if code := run(context.Background(), args, &o, &e, noEnv); code != exitOK || !strings.HasPrefix(o.String(), "oslogin-emulator ") || e.Len() != 0 {
			t.Errorf("%q: exit %d, stdout %q, stderr %q", args, code, o.String(), e.String())
		}
	}
}

// TestServeTLS starts the TLS listener next to the plain one: both address
// lines are printed, the CA file holds only a certificate, and a client
// trusting it gets the same handler over https.
func TestServeTLS(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	pr, pw := io.Pipe()
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"--listen", "127.0.0.1:0", "--tls-listen", "127.0.0.1:0", "--tls-ca-file", caFile, "--project", "demo"}, pw, io.Discard, noEnv)
		pw.Close()
	}()
	br := bufio.NewReader(pr)
	first, err := br.ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	second, err := br.ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	go io.Copy(io.Discard, br)
	if !addrLine.MatchString(first) {
		t.Fatalf("first line %q", first)
	}
	m := regexp.MustCompile(`^export OSLOGIN_EMULATOR_TLS_HOST=(127\.0\.0\.1:\d+)\n$`).FindStringSubmatch(second)
	if m == nil {
		t.Fatalf("second line %q", second)
	}
	pemBytes, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(pemBytes), "PRIVATE KEY") || !strings.Contains(string(pemBytes), "BEGIN CERTIFICATE") {
		t.Fatalf("CA file is not a lone certificate:\n%s", pemBytes)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemBytes) {
		t.Fatal("CA file does not parse")
	}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	defer client.CloseIdleConnections()
	req, _ := http.NewRequest(http.MethodGet, "https://"+m[1]+"/computeMetadata/v1/project/project-id", nil)
	req.Header.Set("Metadata-Flavor", "Google")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "demo" {
		t.Errorf("project id over TLS %q", b)
	}
	cancel()
	select {
	case code := <-done:
		if code != exitOK {
			t.Errorf("exit %d", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("did not stop")
	}
}

// TestTLSFlagsNeedEachOther: a CA file without a TLS listener is a usage
// error, and a TLS address off loopback is refused like --listen.
func TestTLSFlagsNeedEachOther(t *testing.T) {
	if code := run(context.Background(), []string{"--tls-ca-file", "x.pem"}, io.Discard, io.Discard, noEnv); code != exitUsage {
		t.Errorf("--tls-ca-file alone: exit %d", code)
	}
	if code := run(context.Background(), []string{"--tls-listen", "0.0.0.0:0"}, io.Discard, io.Discard, noEnv); code != exitFailure {
		t.Errorf("--tls-listen 0.0.0.0:0: exit %d", code)
	}
}
