package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/spf13/pflag"

	"github.com/oslogin-agent/oslogin-agent/internal/emulator"
)

// vmFlags are the flags of the VM-side commands: where the metadata server
// is and which VM this is.
type vmFlags struct {
	fs         *pflag.FlagSet
	host, inst *string
}

func newVMFlags(name, usage string, stderr io.Writer) vmFlags {
	fs := pflag.NewFlagSet("oslogin-emulator "+name, pflag.ContinueOnError)
	fs.SetOutput(stderr)
	f := vmFlags{fs: fs,
		host: fs.String("metadata-host", "", "metadata server host:port (default $GCE_METADATA_HOST)"),
		inst: fs.String("instance", "", "the VM this sshd plays, by `NAME`, id or ZONE/NAME (default: the emulator's default instance)"),
	}
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: oslogin-emulator "+name+" [--metadata-host HOST:PORT] [--instance NAME]"+usage)
		fs.PrintDefaults()
	}
	return f
}

// parse returns the options, or an error already reported on stderr.
func (f vmFlags) parse(args []string, nargs int, stderr io.Writer, getenv func(string) string) (emulator.AuthorizedKeysOptions, bool) {
	name := f.fs.Name()
	if err := f.fs.Parse(args); err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return emulator.AuthorizedKeysOptions{}, false
	}
	if f.fs.NArg() != nargs {
		f.fs.Usage()
		return emulator.AuthorizedKeysOptions{}, false
	}
	host := *f.host
	if host == "" {
		host = getenv("GCE_METADATA_HOST")
	}
	if host == "" {
		fmt.Fprintf(stderr, "%s: no metadata host: pass --metadata-host or set GCE_METADATA_HOST\n", name)
		return emulator.AuthorizedKeysOptions{}, false
	}
	return emulator.AuthorizedKeysOptions{MetadataHost: host, Instance: *f.inst}, true
}

// runAuthorizedPrincipals is sshd's AuthorizedPrincipalsCommand (%u %k) on
// a VM that trusts the OS Login CA. Like the guest's
// google_authorized_principals it prints the username when OS Login
// authorizes the certificate, prints nothing and exits 0 when it does not,
// and exits 1 on bad usage or a certificate without a fingerprint.
func runAuthorizedPrincipals(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	f := newVMFlags("authorized-principals", " USER CERT_BASE64", stderr)
	opts, ok := f.parse(args, 2, stderr, getenv)
	if !ok {
		return exitFailure
	}
	user, err := emulator.AuthorizedPrincipals(ctx, opts, f.fs.Arg(0), f.fs.Arg(1))
	switch {
	case errors.Is(err, emulator.ErrNoFingerprint):
		fmt.Fprintf(stderr, "oslogin-emulator authorized-principals: %v\n", err)
		return exitFailure
	case err != nil:
		fmt.Fprintf(stderr, "oslogin-emulator authorized-principals: %v\n", err)
		return exitOK // as the guest: denial is an empty answer
	}
	if _, err := fmt.Fprintln(stdout, user); err != nil {
		fmt.Fprintf(stderr, "oslogin-emulator authorized-principals: write: %v\n", err)
	}
	return exitOK
}

// runTrustedCA prints the CA keys of oslogin/certificates, one a line: the
// content the guest agent gives sshd's TrustedUserCAKeys file.
func runTrustedCA(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	f := newVMFlags("trusted-ca", "", stderr)
	opts, ok := f.parse(args, 0, stderr, getenv)
	if !ok {
		return exitFailure
	}
	keys, err := emulator.TrustedCAKeys(ctx, opts)
	if err != nil {
		fmt.Fprintf(stderr, "oslogin-emulator trusted-ca: %v\n", err)
		return exitFailure
	}
	for _, k := range keys {
		if _, err := fmt.Fprintln(stdout, k); err != nil {
			fmt.Fprintf(stderr, "oslogin-emulator trusted-ca: write: %v\n", err)
			return exitFailure
		}
	}
	return exitOK
}
