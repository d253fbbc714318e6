//go:build linux

package agent

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/oslogin-agent/oslogin-agent/signer"
)

// openSSHContext is openSSH with a deadline and no input.
func openSSHContext(ctx context.Context, t *testing.T, sock string, name string, args ...string) (string, error) {
	t.Helper()
	bin, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("%s not installed", name)
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = []string{"SSH_AUTH_SOCK=" + sock, "HOME=" + t.TempDir(), "PATH=/usr/bin:/bin"}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// openSSH runs one of the OpenSSH tools against the agent at sock with a
// scrubbed environment and returns its combined output.
func openSSH(t *testing.T, sock string, stdin []byte, env []string, name string, args ...string) (string, error) {
	t.Helper()
	bin, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("%s not installed", name)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append([]string{
		"SSH_AUTH_SOCK=" + sock,
		"HOME=" + t.TempDir(),
		"PATH=/usr/bin:/bin",
	}, env...)
	cmd.Stdin = bytes.NewReader(stdin)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err = cmd.Run()
	return out.String(), err
}

func TestOpenSSHAddList(t *testing.T) {
	ta := startTestAgent(t, Options{Comment: "oslogin-agent@ci"})
	sock := serve(t, ta.Agent)
	info := ta.Keys()[0]
	wantComment := "oslogin-agent sa_1234567890 expires " + info.Expiry.UTC().Format("2006-01-02T15:04:05Z")

	out, err := openSSH(t, sock, nil, nil, "ssh-add", "-l")
	if err != nil {
		t.Fatalf("ssh-add -l: %v\n%s", err, out)
	}
	if !strings.Contains(out, info.Fingerprint) || !strings.Contains(out, wantComment) || !strings.Contains(out, "(ED25519)") {
		t.Errorf("ssh-add -l printed %q; want %s with comment %q", out, info.Fingerprint, wantComment)
	}

	out, err = openSSH(t, sock, nil, nil, "ssh-add", "-L")
	if err != nil {
		t.Fatalf("ssh-add -L: %v\n%s", err, out)
	}
	fields := strings.Fields(info.AuthorizedKey)
	if want := fields[0] + " " + fields[1] + " " + wantComment; strings.TrimSpace(out) != want {
		t.Errorf("ssh-add -L printed %q, want %q", out, want)
	}
}

func TestOpenSSHAddRefused(t *testing.T) {
	ta := startTestAgent(t, Options{})
	sock := serve(t, ta.Agent)
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "id_ed25519")
	if out, err := openSSH(t, sock, nil, nil, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", keyFile); err != nil {
		t.Fatalf("ssh-keygen: %v\n%s", err, out)
	}
	for _, args := range [][]string{{keyFile}, {"-t", "60", keyFile}, {"-D"}, {"-d", keyFile + ".pub"}} {
		if out, err := openSSH(t, sock, nil, nil, "ssh-add", args...); err == nil {
			t.Errorf("ssh-add %v succeeded: %s", args, out)
		}
	}
	out, err := openSSH(t, sock, nil, nil, "ssh-add", "-l")
	if err != nil || strings.Count(out, "\n") != 1 || !strings.Contains(out, ta.Keys()[0].Fingerprint) {
		t.Errorf("after refused changes ssh-add -l printed %q, %v", out, err)
	}
}

func TestOpenSSHLockUnlock(t *testing.T) {
	ta := startTestAgent(t, Options{})
	sock := serve(t, ta.Agent)
	dir := t.TempDir()
	askpass := func(pw string) []string {
		script := filepath.Join(dir, "askpass-"+pw)
		if err := os.WriteFile(script, []byte("#!/bin/sh\necho "+pw+"\n"), 0o700); err != nil {
			t.Fatal(err)
		}
		return []string{"SSH_ASKPASS=" + script, "SSH_ASKPASS_REQUIRE=force", "DISPLAY=:0"}
	}
	if out, err := openSSH(t, sock, nil, askpass("s3cret"), "ssh-add", "-x"); err != nil {
		t.Fatalf("ssh-add -x: %v\n%s", err, out)
	}
	if out, err := openSSH(t, sock, nil, nil, "ssh-add", "-l"); err == nil || !strings.Contains(out, "no identities") {
		t.Errorf("locked ssh-add -l: %q, %v", out, err)
	}
	if out, err := openSSH(t, sock, nil, askpass("wrong"), "ssh-add", "-X"); err == nil {
		t.Errorf("ssh-add -X with a wrong passphrase succeeded: %s", out)
	}
	if out, err := openSSH(t, sock, nil, askpass("s3cret"), "ssh-add", "-X"); err != nil {
		t.Fatalf("ssh-add -X: %v\n%s", err, out)
	}
	if out, err := openSSH(t, sock, nil, nil, "ssh-add", "-l"); err != nil || !strings.Contains(out, ta.Keys()[0].Fingerprint) {
		t.Errorf("unlocked ssh-add -l: %q, %v", out, err)
	}
}

func TestOpenSSHKeygenSign(t *testing.T) {
	for _, kt := range []signer.KeyType{signer.Ed25519, signer.ECDSAP384, signer.RSA3072} {
		t.Run(kt.String(), func(t *testing.T) {
			ta := startTestAgent(t, Options{KeyType: kt})
			sock := serve(t, ta.Agent)
			info := ta.Keys()[0]
			dir := t.TempDir()
			pubFile := filepath.Join(dir, "agent.pub")
			dataFile := filepath.Join(dir, "data.txt")
			data := []byte("release artefact\n")
			os.WriteFile(pubFile, []byte(info.AuthorizedKey+"\n"), 0o600)
			os.WriteFile(dataFile, data, 0o600)

			if out, err := openSSH(t, sock, nil, nil, "ssh-keygen", "-Y", "sign", "-f", pubFile, "-n", "file", dataFile); err != nil {
				t.Fatalf("ssh-keygen -Y sign: %v\n%s", err, out)
			}
			sigFile := dataFile + ".sig"
			if out, err := openSSH(t, sock, data, nil, "ssh-keygen", "-Y", "check-novalidate", "-n", "file", "-s", sigFile); err != nil {
				t.Fatalf("check-novalidate: %v\n%s", err, out)
			}
			pub, _, _, _, _ := ssh.ParseAuthorizedKey([]byte(info.AuthorizedKey))
			allowed := filepath.Join(dir, "allowed_signers")
			os.WriteFile(allowed, []byte("ci@example.com "+strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pub)))+"\n"), 0o600)
			out, err := openSSH(t, sock, data, nil, "ssh-keygen", "-Y", "verify", "-f", allowed, "-I", "ci@example.com", "-n", "file", "-s", sigFile)
			if err != nil || !strings.Contains(out, "Good") {
				t.Fatalf("verify: %v\n%s", err, out)
			}
			if _, err := openSSH(t, sock, []byte("tampered\n"), nil, "ssh-keygen", "-Y", "verify", "-f", allowed, "-I", "ci@example.com", "-n", "file", "-s", sigFile); err == nil {
				t.Error("tampered data verified")
			}
			recs := ta.logs.find("signature")
			if len(recs) != 1 || recs[0].attrs["result"] != "ok" || !strings.HasSuffix(recs[0].attrs["peer.exe"].(string), "ssh-keygen") {
				t.Errorf("signature records %+v", recs)
			}
			if kt == signer.RSA3072 && recs[0].attrs["algorithm"] != ssh.KeyAlgoRSASHA512 {
				t.Errorf("ssh-keygen got %v, want rsa-sha2-512", recs[0].attrs["algorithm"])
			}
		})
	}
}
