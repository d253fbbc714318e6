package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/oslogin-agent/oslogin-agent/internal/emulator"
	"github.com/oslogin-agent/oslogin-agent/internal/version"
)

// emulatorHostEnv is the variable that points oslogin-agent and the helpers
// at the emulator (oslogin.EmulatorHostEnv; not imported, so that the
// emulator does not depend on the agent's client code).
const emulatorHostEnv = "OSLOGIN_EMULATOR_HOST"

// emulatorTLSHostEnv names the optional TLS listener (--tls-listen), for
// clients such as gcloud that reach the IAP relay only over wss://.
const emulatorTLSHostEnv = "OSLOGIN_EMULATOR_TLS_HOST"

// Exit statuses.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

// run is main without process globals, so tests can drive it in-process or
// through a re-executed test binary.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	if len(args) == 1 && args[0] == "--version" {
		fmt.Fprintln(stdout, version.Line("oslogin-emulator"))
		return exitOK
	}
	if len(args) > 0 {
		switch args[0] {
		case "authorized-keys":
			return runAuthorizedKeys(ctx, args[1:], stdout, stderr, getenv)
		case "authorized-principals":
			return runAuthorizedPrincipals(ctx, args[1:], stdout, stderr, getenv)
		case "trusted-ca":
			return runTrustedCA(ctx, args[1:], stdout, stderr, getenv)
		}
	}
	return runServe(ctx, args, stdout, stderr)
}

// runAuthorizedKeys is sshd's AuthorizedKeysCommand. It is kept to two
// metadata requests and no configuration files because sshd runs it for
// every login attempt.
func runAuthorizedKeys(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	fs := pflag.NewFlagSet("oslogin-emulator authorized-keys", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	host := fs.String("metadata-host", "", "metadata server host:port (default $"+emulatorHostEnv+", else $GCE_METADATA_HOST)")
	inst := fs.String("instance", "", "the VM this sshd plays, by `NAME`, id or ZONE/NAME (default: the emulator's default instance)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: oslogin-emulator authorized-keys [--metadata-host HOST:PORT] [--instance NAME] USER")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		fmt.Fprintf(stderr, "oslogin-emulator authorized-keys: %v\n", err)
		return exitFailure
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return exitFailure
	}
	if *host == "" {
		*host = getenv(emulatorHostEnv)
	}
	if *host == "" {
		*host = getenv("GCE_METADATA_HOST")
	}
	if *host == "" {
		fmt.Fprintln(stderr, "oslogin-emulator authorized-keys: no emulator to ask: set "+emulatorHostEnv+
			" to the address oslogin-emulator printed, or pass --metadata-host HOST:PORT")
		return exitFailure
	}
	keys, err := emulator.AuthorizedKeys(ctx, emulator.AuthorizedKeysOptions{MetadataHost: *host, Instance: *inst}, fs.Arg(0))
	if err != nil {
		fmt.Fprintf(stderr, "oslogin-emulator authorized-keys: %v\n", err)
		return exitOK // as the guest: denial is an empty answer, not a failure
	}
	w := bufio.NewWriter(stdout)
	for _, k := range keys {
		w.WriteString(k + "\n") // keys as stored: a stored newline yields an empty line, like the guest
	}
	if err := w.Flush(); err != nil {
		fmt.Fprintf(stderr, "oslogin-emulator authorized-keys: write: %v\n", err)
	}
	return exitOK
}

// serveFlags are the flags of the serving mode.
type serveFlags struct {
	listen, tlsListen, tlsCAFile, configPath, project, projectNumber, keyFile, keyAccount, logLevel string
	allowNonLoopback                                                                                bool
	serviceAccounts, users, logins, adminLogins, usernames                                          []string
	computeViewers, instances, projectMetadata, grants                                              []string
	purgeDelay, tokenLifetime                                                                       time.Duration
	profileLimit, writeQuota                                                                        int
}

func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := pflag.NewFlagSet("oslogin-emulator", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	var f serveFlags
	fs.StringVar(&f.listen, "listen", "127.0.0.1:0", "address to listen on; the bound address is printed as export "+emulatorHostEnv+"=host:port")
	fs.StringVar(&f.tlsListen, "tls-listen", "", "also serve over TLS on this `ADDRESS` (e.g. 127.0.0.1:0), with a self-signed certificate made at start; printed as export "+emulatorTLSHostEnv+"=host:port (gcloud's IAP tunnel needs wss://)")
	fs.StringVar(&f.tlsCAFile, "tls-ca-file", "", "write the TLS certificate (public; the key is never written) to `PATH` for clients to trust, e.g. CLOUDSDK_CORE_CUSTOM_CA_CERTS_FILE")
	fs.BoolVar(&f.allowNonLoopback, "allow-non-loopback", false, "permit a --listen address outside loopback (the admin API still answers loopback only)")
	fs.StringVar(&f.configPath, "config", "", "JSON configuration file (see emulator.ParseConfig)")
	fs.StringVar(&f.project, "project", "", "project id (default "+emulator.DefaultProjectID+")")
	fs.StringVar(&f.projectNumber, "project-number", "", "numeric project id (default derived from the project id)")
	fs.StringArrayVar(&f.serviceAccounts, "service-account", nil, "add a service account `EMAIL` (repeatable)")
	fs.StringArrayVar(&f.users, "user", nil, "add a user account `EMAIL` (repeatable)")
	fs.StringArrayVar(&f.logins, "login", nil, "allow `EMAIL` to log in to the VM (repeatable)")
	fs.StringArrayVar(&f.adminLogins, "admin-login", nil, "allow `EMAIL` to log in as admin (repeatable)")
	fs.StringArrayVar(&f.usernames, "username", nil, "custom POSIX username, `EMAIL=NAME` (repeatable)")
	fs.StringArrayVar(&f.computeViewers, "compute-viewer", nil, "let `EMAIL` read instances, the project and guest attributes through the Compute API (roles/compute.viewer; repeatable)")
	fs.StringArrayVar(&f.instances, "instance", nil, "add a VM: `NAME[,zone=Z][,id=N][,ip=IP][,nat=IP][,status=S][,sa=EMAIL|none][,scope=S]...[,oslogin=B][,certificates=B][,guest-attributes=B]`; addresses must be loopback; the first one is the default instance unless the default name is among them (repeatable)")
	fs.StringArrayVar(&f.projectMetadata, "project-metadata", nil, "set a commonInstanceMetadata item, `KEY=VALUE`, over the default enable-oslogin and enable-guest-attributes TRUE (repeatable)")
	fs.StringArrayVar(&f.grants, "grant", nil, "grant instance roles, `EMAIL=INSTANCE:ROLE[+ROLE]`, ROLE login, admin-login or iap-tunnel; INSTANCE NAME or ZONE/NAME of an --instance (repeatable)")
	fs.DurationVar(&f.purgeDelay, "purge-delay", emulator.DefaultPurgeDelay, "how long expired keys stay in profiles; negative: forever, 1ns: at once")
	fs.DurationVar(&f.tokenLifetime, "token-lifetime", emulator.DefaultTokenLifetime, "lifetime of issued access tokens")
	fs.IntVar(&f.profileLimit, "profile-limit", emulator.DefaultProfileLimit, "maximum bytes of stored keys per profile; negative: unlimited")
	fs.IntVar(&f.writeQuota, "write-quota", 0, "per-user write requests per minute (Google: 60); 0: off")
	fs.StringVar(&f.keyFile, "write-key-file", "", "write a service-account JSON key file to `PATH` once listening")
	fs.StringVar(&f.keyAccount, "account", "", "service account for --write-key-file (default: the attached one)")
	fs.StringVar(&f.logLevel, "log-level", "warn", "debug, info, warn or error; debug logs every request")
	showVersion := fs.Bool("version", false, "print the version and exit")
	fs.Usage = func() {
		fmt.Fprint(stderr, "usage: oslogin-emulator [flags]\n       oslogin-emulator authorized-keys [--metadata-host HOST:PORT] [--instance NAME] USER\n       oslogin-emulator authorized-principals [--metadata-host HOST:PORT] [--instance NAME] USER CERT_BASE64\n       oslogin-emulator trusted-ca [--metadata-host HOST:PORT] [--instance NAME]\n\n"+
			"Serves the OS Login API, the read side of the Compute Engine API, the GCE\nmetadata server and the VM side of OS Login on loopback and prints\n"+
			"export "+emulatorHostEnv+"=host:port once listening: set that\nvariable for oslogin-agent and the helpers to use the emulator.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return exitOK
		}
		fmt.Fprintf(stderr, "oslogin-emulator: %v\n", err)
		return exitUsage
	}
	if fs.NArg() != 0 {
		fmt.Fprintf(stderr, "oslogin-emulator: unexpected arguments %q\n", fs.Args())
		return exitUsage
	}
	if *showVersion {
		fmt.Fprintln(stdout, version.Line("oslogin-emulator"))
		return exitOK
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(f.logLevel)); err != nil {
		fmt.Fprintf(stderr, "oslogin-emulator: --log-level: %v\n", err)
		return exitUsage
	}
	cfg, err := buildConfig(fs, f)
	if err != nil {
		fmt.Fprintf(stderr, "oslogin-emulator: %v\n", err)
		return exitUsage
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	if f.tlsCAFile != "" && f.tlsListen == "" {
		fmt.Fprintln(stderr, "oslogin-emulator: --tls-ca-file needs --tls-listen")
		return exitUsage
	}
	if !f.allowNonLoopback {
		for _, a := range []string{f.listen, f.tlsListen} {
			if a == "" {
				continue
			}
			if err := checkLoopback(a); err != nil {
				fmt.Fprintf(stderr, "oslogin-emulator: %v\n", err)
				return exitFailure
			}
		}
	}
	// Building the emulator checks the whole configuration (instance names,
	// zones, addresses, grants), so bad flag values are usage errors.
	emu, err := emulator.New(emulator.Options{Config: cfg, Logger: logger})
	if err != nil {
		fmt.Fprintf(stderr, "oslogin-emulator: %v\n", err)
		return exitUsage
	}
	defer emu.Close()
	if err := serve(ctx, f, emu, logger, stdout); err != nil {
		fmt.Fprintf(stderr, "oslogin-emulator: %v\n", err)
		return exitFailure
	}
	return exitOK
}

// buildConfig layers the flags over the config file (or the defaults).
func buildConfig(fs *pflag.FlagSet, f serveFlags) (emulator.Config, error) {
	var cfg emulator.Config
	if f.configPath != "" {
		var err error
		if cfg, err = emulator.LoadConfig(f.configPath); err != nil {
			return cfg, err
		}
	}
	if f.project != "" {
		cfg.ProjectID = f.project
	}
	if f.projectNumber != "" {
		cfg.ProjectNumber = f.projectNumber
	}
	if fs.Changed("purge-delay") || f.configPath == "" {
		cfg.PurgeDelay = f.purgeDelay
	}
	if fs.Changed("token-lifetime") || f.configPath == "" {
		cfg.TokenLifetime = f.tokenLifetime
	}
	if fs.Changed("profile-limit") || f.configPath == "" {
		cfg.ProfileLimit = f.profileLimit
	}
	if fs.Changed("write-quota") {
		cfg.WriteQuotaPerMinute = f.writeQuota
	}
	if cfg.Accounts == nil {
		cfg.Accounts = []emulator.Account{emulator.DefaultAccount(cfg.ProjectID)}
	}
	for _, e := range f.serviceAccounts {
		cfg.Accounts = append(cfg.Accounts, emulator.Account{Email: e, ServiceAccount: true})
	}
	for _, e := range f.users {
		cfg.Accounts = append(cfg.Accounts, emulator.Account{Email: e})
	}
	find := func(flag, email string) (*emulator.Account, error) {
		for i := range cfg.Accounts {
			if strings.EqualFold(cfg.Accounts[i].Email, email) {
				return &cfg.Accounts[i], nil
			}
		}
		return nil, fmt.Errorf("--%s %s: unknown account (add it with --user or --service-account)", flag, email)
	}
	for _, e := range f.logins {
		a, err := find("login", e)
		if err != nil {
			return cfg, err
		}
		a.Login = true
	}
	for _, e := range f.adminLogins {
		a, err := find("admin-login", e)
		if err != nil {
			return cfg, err
		}
		a.Login, a.AdminLogin = true, true
	}
	for _, kv := range f.usernames {
		email, name, ok := strings.Cut(kv, "=")
		if !ok {
			return cfg, fmt.Errorf("--username %q: want EMAIL=NAME", kv)
		}
		a, err := find("username", email)
		if err != nil {
			return cfg, err
		}
		a.Username = name
	}
	for _, e := range f.computeViewers {
		a, err := find("compute-viewer", e)
		if err != nil {
			return cfg, err
		}
		a.ComputeViewer = true
	}
	for _, v := range f.instances {
		in, err := parseInstanceFlag(v)
		if err != nil {
			return cfg, err
		}
		cfg.Instances = append(cfg.Instances, in)
	}
	if len(f.projectMetadata) > 0 && cfg.ProjectMetadata == nil {
		cfg.ProjectMetadata = emulator.DefaultProjectMetadata(cfg.OSLoginDisabled)
	}
	for _, kv := range f.projectMetadata {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return cfg, fmt.Errorf("--project-metadata %q: want KEY=VALUE", kv)
		}
		cfg.ProjectMetadata[k] = v
	}
	for _, v := range f.grants {
		if err := applyGrantFlag(&cfg, v); err != nil {
			return cfg, err
		}
	}
	return cfg, nil
}

// checkLoopback refuses listen addresses reachable from other machines: the
// emulator hands out tokens and keys to anyone who asks its admin API.
func checkLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("--listen %q: %w", addr, err)
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("--listen %q is not a loopback address; pass --allow-non-loopback to use it", addr)
	}
	return nil
}

func serve(ctx context.Context, f serveFlags, emu *emulator.Emulator, logger *slog.Logger, stdout io.Writer) error {
	ln, err := net.Listen("tcp", f.listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	addr := ln.Addr().String()
	if f.keyFile != "" {
		if err := writeKeyFile(emu, f.keyAccount, f.keyFile, "http://"+addr+"/token"); err != nil {
			ln.Close()
			return err
		}
	}
	var tlsLn net.Listener
	if f.tlsListen != "" {
		if tlsLn, err = listenTLS(f.tlsListen, f.tlsCAFile); err != nil {
			ln.Close()
			return err
		}
	}
	srvs := []*http.Server{{Handler: emu.Handler(), ReadHeaderTimeout: 10 * time.Second}}
	lns := []net.Listener{ln}
	if tlsLn != nil {
		srvs = append(srvs, &http.Server{Handler: emu.Handler(), ReadHeaderTimeout: 10 * time.Second})
		lns = append(lns, tlsLn)
	}
	served := make(chan error, len(srvs))
	for i, srv := range srvs {
		go func() { served <- srv.Serve(lns[i]) }()
	}
	out := fmt.Sprintf("export %s=%s\n", emulatorHostEnv, addr)
	if tlsLn != nil {
		out += fmt.Sprintf("export %s=%s\n", emulatorTLSHostEnv, tlsLn.Addr())
	}
	if _, err := io.WriteString(stdout, out); err != nil {
		logger.Warn("cannot print the address", "err", err)
	}
	logger.Info("serving", "addr", addr, "project", emu.Config().ProjectID)

	var serveErr error
	pending := len(srvs)
	select {
	case err := <-served:
		serveErr = fmt.Errorf("serve: %w", err)
		pending--
	case <-ctx.Done():
	}
	emu.Close() // release stalled requests so shutdown is prompt
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, srv := range srvs {
		if err := srv.Shutdown(shutdownCtx); err != nil && serveErr == nil {
			serveErr = fmt.Errorf("shutdown: %w", err)
		}
	}
	for range pending {
		<-served // each Serve returns ErrServerClosed
	}
	return serveErr
}

// listenTLS listens on addr with a fresh self-signed certificate and, if
// caFile is set, writes that certificate there before anyone is told the
// address.
func listenTLS(addr, caFile string) (net.Listener, error) {
	cert, certPEM, err := selfSignedTLS(time.Now())
	if err != nil {
		return nil, err
	}
	if caFile != "" {
		if err := writeCAFile(caFile, certPEM); err != nil {
			return nil, err
		}
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--tls-listen: %w", err)
	}
	return tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12,
		NextProtos: []string{"http/1.1"}}), nil
}

func writeKeyFile(emu *emulator.Emulator, email, path, tokenURI string) error {
	if email == "" {
		accounts := emu.Accounts()
		if len(accounts) == 0 || !accounts[0].ServiceAccount {
			return errors.New("--write-key-file: no attached service account; name one with --account")
		}
		email = accounts[0].Email
	}
	b, err := emu.ServiceAccountKeyJSON(email, tokenURI)
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return fmt.Errorf("--write-key-file: %w", err)
	}
	return nil
}
