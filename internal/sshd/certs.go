package sshd

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// authLines are the sshd_config lines that decide where keys come from,
// as the guest agent writes them. A default VM asks OS Login for imported
// keys (AuthorizedKeysCommand). A VM with enable-oslogin-certificates=TRUE
// gets instead the OS Login CA (TrustedUserCAKeys) and the principals
// command, and no AuthorizedKeysCommand at all, so imported keys are
// refused. The agent runs the principals command as root; here it runs as
// KeysUser, for the same reason as the keys command.
func authLines(opts Options) (string, error) {
	inst := ""
	if opts.Instance != "" {
		inst = " --instance " + opts.Instance
	}
	if !opts.CertificateOnly {
		return fmt.Sprintf("AuthorizedKeysCommand /usr/bin/env %s authorized-keys --metadata-host %s%s %%u\nAuthorizedKeysCommandUser %s\n",
			opts.Emulator, opts.MetadataHost, inst, opts.KeysUser), nil
	}
	caFile, err := writeTrustedCA(opts)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("TrustedUserCAKeys %s\nAuthorizedPrincipalsCommand /usr/bin/env %s authorized-principals --metadata-host %s%s %%u %%k\nAuthorizedPrincipalsCommandUser %s\n",
		caFile, opts.Emulator, opts.MetadataHost, inst, opts.KeysUser), nil
}

// writeTrustedCA fills Dir/oslogin_trustedca.pub from the metadata server's
// oslogin/certificates, as the guest agent serves that file to sshd. The
// agent's file is a pipe refilled on every read; the emulator's CA does not
// change while it runs, so one read at start is the same.
func writeTrustedCA(opts Options) (string, error) {
	args := []string{"trusted-ca", "--metadata-host", opts.MetadataHost}
	if opts.Instance != "" {
		args = append(args, "--instance", opts.Instance)
	}
	cmd := exec.Command(opts.Emulator, args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil || len(strings.TrimSpace(string(out))) == 0 {
		return "", fmt.Errorf("sshd: trusted CA keys from %s: %v %s", opts.MetadataHost, err, stderr.String())
	}
	path := filepath.Join(opts.Dir, "oslogin_trustedca.pub")
	if err := os.WriteFile(path, out, 0o644); err != nil {
		return "", fmt.Errorf("sshd: %w", err)
	}
	return path, nil
}
