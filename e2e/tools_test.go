package e2e

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestOpenSSHToolsThroughAgent drives the stock programs a CI job uses, each
// through the agent's socket only, against a real sshd that asks the
// emulator's VM side for keys.
func TestOpenSSHToolsThroughAgent(t *testing.T) {
	needTools(t, "scp", "sftp", "ssh-add", "git", "rsync")
	v := newVM(t, nil)
	s := v.startSSHD(t)
	a := v.startAgent(t, "")
	if a.user != v.user {
		t.Fatalf("OSLOGIN_USER = %q, want %q", a.user, v.user)
	}
	keys := v.emu.Emulator.Keys(v.email)
	if len(keys) != 1 {
		t.Fatalf("OS Login holds %d keys, want 1", len(keys))
	}
	registered := keys[0].Key
	port := strconv.Itoa(s.Port)
	remote := v.scratch(t)

	t.Run("ssh runs a command with its output and exit status", func(t *testing.T) {
		cmd := v.ssh(s, a.sock, "echo hello; id -un; exit 7")
		out, err := cmd.Output()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 7 {
			t.Fatalf("exit = %v, want status 7 (output %q)", err, out)
		}
		if want := "hello\n" + v.user + "\n"; string(out) != want {
			t.Fatalf("output %q, want %q", out, want)
		}
	})

	t.Run("scp uploads and downloads 1 MiB unchanged", func(t *testing.T) {
		local := t.TempDir()
		payload := make([]byte, 1<<20)
		rand.Read(payload)
		src := filepath.Join(local, "payload")
		os.WriteFile(src, payload, 0o644)
		dst := v.user + "@127.0.0.1:" + remote + "/payload"
		mustRun(t, exec.Command("scp", append(v.sshOpts(a.sock), "-P", port, src, dst)...))
		back := filepath.Join(local, "back")
		mustRun(t, exec.Command("scp", append(v.sshOpts(a.sock), "-P", port, dst, back)...))
		got, _ := os.ReadFile(back)
		if sha256.Sum256(got) != sha256.Sum256(payload) {
			t.Fatal("scp round trip changed the file")
		}
	})

	t.Run("sftp runs a batch", func(t *testing.T) {
		local := t.TempDir()
		os.WriteFile(filepath.Join(local, "in.txt"), []byte("sftp batch\n"), 0o644)
		batch := filepath.Join(local, "batch")
		os.WriteFile(batch, []byte("cd "+remote+"\nput "+filepath.Join(local, "in.txt")+" s.txt\nget s.txt "+filepath.Join(local, "out.txt")+"\nls -1\n"), 0o644)
		out := mustRun(t, exec.Command("sftp", append(v.sshOpts(a.sock), "-P", port, "-b", batch, v.user+"@127.0.0.1")...))
		if !strings.Contains(out, "s.txt") {
			t.Fatalf("sftp ls did not list s.txt:\n%s", out)
		}
		if got, _ := os.ReadFile(filepath.Join(local, "out.txt")); string(got) != "sftp batch\n" {
			t.Fatalf("sftp get returned %q", got)
		}
	})

	t.Run("ssh-add lists the registered key", func(t *testing.T) {
		env := append(v.agentEnv(), "SSH_AUTH_SOCK="+a.sock)
		l := exec.Command("ssh-add", "-l")
		l.Env = env
		out := mustRun(t, l)
		if !strings.Contains(out, "(ED25519)") || !strings.Contains(out, "oslogin-agent") || !strings.Contains(out, v.user) {
			t.Fatalf("ssh-add -l = %q; want the ED25519 key with a comment naming oslogin-agent and %s", out, v.user)
		}
		L := exec.Command("ssh-add", "-L")
		L.Env = env
		out = mustRun(t, L)
		if blob(out) != blob(registered) {
			t.Fatalf("ssh-add -L = %q; OS Login holds %q", out, registered)
		}
	})

	t.Run("ssh-keygen -Y signs through the agent and verifies", func(t *testing.T) {
		dir := t.TempDir()
		pub := filepath.Join(dir, "key.pub")
		os.WriteFile(pub, []byte(registered+"\n"), 0o644)
		data := filepath.Join(dir, "data")
		os.WriteFile(data, []byte("release v1.2.3\n"), 0o644)
		sign := exec.Command("ssh-keygen", "-Y", "sign", "-f", pub, "-n", "file", data)
		sign.Env = append(v.agentEnv(), "SSH_AUTH_SOCK="+a.sock)
		mustRun(t, sign)
		allowed := filepath.Join(dir, "allowed_signers")
		os.WriteFile(allowed, []byte("ci@example.com "+registered+"\n"), 0o644)
		verify := exec.Command("ssh-keygen", "-Y", "verify", "-f", allowed, "-I", "ci@example.com", "-n", "file", "-s", data+".sig")
		verify.Stdin, _ = os.Open(data)
		if out := mustRun(t, verify); !strings.Contains(out, "Good") {
			t.Fatalf("verify said %q", out)
		}
		// The same signature must not verify other data.
		os.WriteFile(data, []byte("release v6.6.6\n"), 0o644)
		verify = exec.Command("ssh-keygen", "-Y", "verify", "-f", allowed, "-I", "ci@example.com", "-n", "file", "-s", data+".sig")
		verify.Stdin, _ = os.Open(data)
		if err := verify.Run(); err == nil {
			t.Fatal("a signature verified over different data")
		}
	})

	t.Run("git clone over ssh", func(t *testing.T) {
		repo := filepath.Join(remote, "repo.git")
		work := t.TempDir()
		git := func(dir string, args ...string) string {
			cmd := exec.Command("git", args...)
			cmd.Dir = dir
			cmd.Env = append(v.agentEnv(), "GIT_SSH_COMMAND=ssh "+strings.Join(v.sshOpts(a.sock), " "),
				"GIT_AUTHOR_NAME=ci", "GIT_AUTHOR_EMAIL=ci@example.com", "GIT_COMMITTER_NAME=ci", "GIT_COMMITTER_EMAIL=ci@example.com")
			return mustRun(t, cmd)
		}
		mustRun(t, v.ssh(s, a.sock, "git", "init", "-q", "--bare", repo))
		url := "ssh://" + v.user + "@127.0.0.1:" + port + repo
		git(work, "clone", "-q", url, "w")
		os.WriteFile(filepath.Join(work, "w", "README"), []byte("through oslogin-agent\n"), 0o644)
		git(filepath.Join(work, "w"), "add", "README")
		git(filepath.Join(work, "w"), "commit", "-q", "-m", "first")
		git(filepath.Join(work, "w"), "push", "-q", "origin", "HEAD")
		git(work, "clone", "-q", url, "again")
		if got, _ := os.ReadFile(filepath.Join(work, "again", "README")); string(got) != "through oslogin-agent\n" {
			t.Fatalf("clone after push has README %q", got)
		}
	})

	t.Run("rsync over ssh", func(t *testing.T) {
		src := t.TempDir()
		os.MkdirAll(filepath.Join(src, "sub"), 0o755)
		os.WriteFile(filepath.Join(src, "a.txt"), []byte("alpha\n"), 0o644)
		os.WriteFile(filepath.Join(src, "sub", "b.bin"), bytes.Repeat([]byte{7}, 300000), 0o644)
		rsh := "ssh " + strings.Join(v.sshOpts(a.sock), " ") + " -p " + port
		mustRun(t, exec.Command("rsync", "-a", "-e", rsh, src+"/", v.user+"@127.0.0.1:"+remote+"/rsynced/"))
		back := t.TempDir()
		mustRun(t, exec.Command("rsync", "-a", "-e", rsh, v.user+"@127.0.0.1:"+remote+"/rsynced/", back+"/"))
		for _, f := range []string{"a.txt", "sub/b.bin"} {
			want, _ := os.ReadFile(filepath.Join(src, f))
			got, err := os.ReadFile(filepath.Join(back, f))
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("%s did not survive the rsync round trip (%v)", f, err)
			}
		}
	})

	t.Run("logins cost no OS Login calls", func(t *testing.T) {
		before := v.emu.Emulator.Calls()
		for i := 0; i < 3; i++ {
			mustRun(t, v.ssh(s, a.sock, "true"))
		}
		after := v.emu.Emulator.Calls()
		for _, m := range []string{"users.importSshPublicKey", "users.sshPublicKeys.patch", "users.sshPublicKeys.delete", "users.getLoginProfile"} {
			if after[m] != before[m] {
				t.Errorf("%s went from %d to %d during plain logins", m, before[m], after[m])
			}
		}
	})
}

// blob is the base64 key field of an authorized_keys line.
func blob(line string) string {
	f := strings.Fields(line)
	if len(f) < 2 {
		return ""
	}
	return f[1]
}
