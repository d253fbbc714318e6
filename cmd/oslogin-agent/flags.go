package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"time"

	"github.com/spf13/pflag"

	"github.com/oslogin-agent/oslogin-agent/agent"
	"github.com/oslogin-agent/oslogin-agent/oslogin"
	"github.com/oslogin-agent/oslogin-agent/signer"
)

// Limits on the lease. A TTL under minTTL leaves no room to renew at half
// of it; one over maxTTL stops being ephemeral.
const (
	minTTL    = 10 * time.Second
	maxTTL    = 7 * 24 * time.Hour
	maxRotate = 30 * 24 * time.Hour
)

// config is everything the command line says.
type config struct {
	socket      string
	foreground  bool
	debug       bool
	shSyntax    bool
	cshSyntax   bool
	kill        bool
	ttl         time.Duration
	rotate      time.Duration
	propagation time.Duration
	keyType     signer.KeyType
	account     string
	project     string
	endpoint    string
	tokenInfo   string
	endpoints   oslogin.Endpoints // from --endpoint, --tokeninfo-url and OSLOGIN_EMULATOR_HOST
	regions     []string
	logFormat   string
	logLevel    string
	logFile     string
	startTime   time.Duration
	version     bool
	help        bool
	command     []string
	activated   net.Listener // the socket systemd passed, with -D
	certMode    agent.CertMode
	certScopes  []certScope
}

// usageError is a mistake on the command line: exit status 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

// certFlags are the raw --certificates and --certificates-for values.
type certFlags struct {
	mode  string
	scope []string
}

func newFlagSet(cfg *config, keyType *string, cf *certFlags) *pflag.FlagSet {
	fs := pflag.NewFlagSet("oslogin-agent", pflag.ContinueOnError)
	fs.SetInterspersed(false) // everything after the first non-flag is the command
	fs.SortFlags = false
	fs.StringVarP(&cfg.socket, "socket", "a", "", "bind the agent to this Unix socket `path` (default: a private directory under $XDG_RUNTIME_DIR or $TMPDIR)")
	fs.BoolVarP(&cfg.foreground, "foreground", "D", false, "stay in the foreground")
	fs.BoolVarP(&cfg.debug, "debug", "d", false, "stay in the foreground and log debug detail to stderr")
	fs.BoolVarP(&cfg.shSyntax, "sh", "s", false, "print Bourne shell commands (SSH_AUTH_SOCK, SSH_AGENT_PID, OSLOGIN_USER) once the key is registered")
	fs.BoolVarP(&cfg.cshSyntax, "csh", "c", false, "print C shell commands instead")
	fs.BoolVarP(&cfg.kill, "kill", "k", false, "stop the agent named by SSH_AGENT_PID, deleting its keys from OS Login")
	fs.DurationVarP(&cfg.ttl, "ttl", "t", 10*time.Minute, "lifetime of a key at OS Login; renewed at half of it")
	fs.DurationVar(&cfg.rotate, "rotate", time.Hour, "replace the key with a fresh one this often")
	fs.DurationVar(&cfg.propagation, "propagation", 30*time.Second, "how long a new key may take to reach VMs; the previous key is offered first meanwhile")
	fs.StringVar(keyType, "key-type", signer.Ed25519.String(), "key type: ed25519, ecdsa-p256, ecdsa-p384, rsa-3072 or rsa-4096")
	fs.StringVar(&cfg.account, "account", "", "account `e-mail` whose OS Login profile holds the keys (default: from the credentials)")
	fs.StringVar(&cfg.project, "project", "", "project `ID` whose POSIX username to use (default: from the credentials or metadata server)")
	fs.StringVar(&cfg.endpoint, "endpoint", "", "OS Login API base `URL`, http:// or https:// (default: Google's, or the emulator's when $OSLOGIN_EMULATOR_HOST is set)")
	fs.StringVar(&cfg.tokenInfo, "tokeninfo-url", "", "token info `URL` asked for the e-mail of user credentials (default: Google's)")
	fs.StringSliceVar(&cfg.regions, "regions", nil, "wait for new keys to reach these `regions` before using them")
	fs.StringVar(&cfg.logFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&cfg.logLevel, "log-level", "", "debug, info, warn or error (default: info in the log; the terminal of a command or -s shows warnings and errors only)")
	fs.StringVar(&cfg.logFile, "log-file", "", "append logs, with one audit record per signature, to this `file` (default: stderr with -D; none in command and background modes)")
	fs.StringVar(&cf.mode, "certificates", "auto", "OS Login certificates: auto (where a VM requires them), always, or never (imported keys only)")
	fs.StringSliceVar(&cf.scope, "certificates-for", nil, "VMs whose published host keys select a certificate: project `IDs` or NAME.ZONE.PROJECT (default: the agent's project)")
	fs.DurationVar(&cfg.startTime, "start-timeout", time.Minute, "give up if the first key is not registered within this time")
	fs.BoolVar(&cfg.version, "version", false, "print the version and exit")
	fs.BoolVarP(&cfg.help, "help", "h", false, "show this help")
	fs.MarkHidden("tokeninfo-url")
	return fs
}

// parseFlags reads and checks the command line.
func parseFlags(args []string) (*config, *pflag.FlagSet, error) {
	cfg := &config{}
	var keyType string
	var cf certFlags
	fs := newFlagSet(cfg, &keyType, &cf)
	fs.SetOutput(io.Discard) // errors are reported once, by main
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			cfg.help = true
			return cfg, fs, nil
		}
		return nil, fs, usagef("%v", err)
	}
	cfg.command = fs.Args()
	if cfg.help || cfg.version {
		return cfg, fs, nil
	}
	kt, err := signer.ParseKeyType(keyType)
	if err != nil {
		return nil, fs, usagef("--key-type: %v", err)
	}
	cfg.keyType = kt
	if cfg.certMode, err = parseCertMode(cf.mode); err != nil {
		return nil, fs, usagef("%v", err)
	}
	if cfg.certScopes, err = parseCertScopes(cf.scope); err != nil {
		return nil, fs, usagef("%v", err)
	}
	if !fs.Changed("propagation") {
		// Unset: the agent takes 30s, or less when the TTL is too short for it.
		cfg.propagation = min(cfg.propagation, agent.MaxPropagation(cfg.ttl))
	}
	if err := cfg.check(); err != nil {
		return nil, fs, err
	}
	if cfg.kill { // talks to no service
		return cfg, fs, nil
	}
	cfg.endpoints, err = oslogin.ResolveEndpoints(oslogin.EndpointOverrides{OSLogin: cfg.endpoint, TokenInfo: cfg.tokenInfo}, os.Getenv)
	if err != nil {
		return nil, fs, usagef("%v", err)
	}
	return cfg, fs, nil
}

// check rejects combinations and values that cannot work.
func (c *config) check() error {
	switch {
	case c.shSyntax && c.cshSyntax:
		return usagef("-s and -c cannot be used together")
	case c.kill && len(c.command) > 0:
		return usagef("-k takes no command")
	case len(c.command) > 0 && (c.foreground || c.debug):
		return usagef("-D and -d cannot be used with a command: the agent lives exactly as long as the command")
	case c.ttl < minTTL:
		return usagef("--ttl %v is too short to renew the key in time; use at least %v", c.ttl, minTTL)
	case c.ttl > maxTTL:
		return usagef("--ttl %v is longer than %v; ephemeral keys should expire soon (the agent renews them while it runs)", c.ttl, maxTTL)
	case c.rotate < c.ttl/2:
		return usagef("--rotate %v is shorter than half the TTL (%v): keys would pile up; rotate less often or lower --ttl", c.rotate, c.ttl/2)
	case c.rotate > maxRotate:
		return usagef("--rotate %v is longer than %v; rotate at least monthly", c.rotate, maxRotate)
	case c.propagation < 0:
		return usagef("--propagation must not be negative")
	case c.propagation > agent.MaxPropagation(c.ttl):
		return usagef("--propagation %v is too long for --ttl %v: the previous key must outlive it; use at most %v",
			c.propagation, c.ttl, agent.MaxPropagation(c.ttl))
	case c.startTime <= 0:
		return usagef("--start-timeout must be positive")
	case c.logFormat != "text" && c.logFormat != "json":
		return usagef("--log-format %q: want text or json", c.logFormat)
	case c.logLevel != "" && new(slog.Level).UnmarshalText([]byte(c.logLevel)) != nil:
		return usagef("--log-level %q: want debug, info, warn or error", c.logLevel)
	}
	return nil
}

func printUsage(fs *pflag.FlagSet, w io.Writer) {
	fmt.Fprintf(w, `Usage:
  eval "$(oslogin-agent -s)"            start in the background, print shell variables
  oslogin-agent [flags] -- COMMAND ...  run one command with the agent, exit with its status
  oslogin-agent -D | -d                 stay in the foreground
  oslogin-agent -k                      stop the agent named by SSH_AGENT_PID

oslogin-agent keeps an SSH key in memory, registers it with Google OS Login with a short
expiry, renews and rotates it, deletes it on exit, and serves it to ssh through SSH_AUTH_SOCK.

Flags:
%s
Environment:
  OSLOGIN_EMULATOR_HOST=host:port      use oslogin-emulator for everything; nothing leaves loopback
  GOOGLE_APPLICATION_CREDENTIALS=file  credentials, as for every Google client
`, fs.FlagUsages())
}
