// Command bench measures oslogin-agent side by side with OpenSSH's ssh-agent,
// in one run, on this machine only (127.0.0.1):
//
//   - signing through the socket at 1, 8 and 64 clients for ed25519,
//     ecdsa-p256 and rsa-3072, with package signer's in-process rate as the
//     limit;
//   - start to ready (registered key, answering socket) against the OS Login
//     emulator with 0 ms and 100 ms of injected latency;
//   - real logins (`ssh host true`) and an Ansible playbook through each
//     agent against real sshd instances whose AuthorizedKeysCommand asks the
//     emulator;
//   - OS Login calls per connection and per hour of running;
//   - memory (VmRSS) of both agents idle and under 64 clients;
//   - the IAP tunnel: bulk throughput and `ssh vm true` through gcloud's
//     start-iap-tunnel, package iaptunnel and a direct connection;
//   - a fleet of emulated VMs (fleet.go, issues 9 and 10): `ssh vm true`
//     through `oslogin-agent proxy --fdpass` against direct ssh and gcloud's
//     tunnel, Google calls per connection after the first, an Ansible
//     playbook over IAP-only VMs with each ProxyCommand, and OS Login
//     certificates: signing calls per Ansible run and over time, set-up
//     with a cached certificate against a key VM.
//
// The two agents are measured alternately (ABBA order across rounds) so that
// machine noise hits both alike. It prints a table with the targets of
// issue 5 next to the figures; --json prints the figures as JSON on stdout
// and the table on stderr. --smoke is a short run for the test suite: tiny
// N, one round, no Ansible; its targets are reported, never judged.
//
// Run it from the repository root:
//
//	go run ./scripts/bench            # full run, a few minutes
//	go run ./scripts/bench --smoke    # under 30 seconds
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/oslogin-agent/oslogin-agent/internal/sshd"
	"github.com/oslogin-agent/oslogin-agent/signer"
)

func main() {
	// Before anything else: no credential lookup may reach a real metadata
	// server or Google, and no credentials on this machine are read.
	os.Setenv("GCE_METADATA_HOST", "127.0.0.1:1")
	os.Unsetenv("GOOGLE_APPLICATION_CREDENTIALS")
	if os.Getenv(tunnelHelperEnv) != "" {
		os.Exit(tunnelHelper()) // ssh runs this program as its ProxyCommand
	}
	os.Exit(run(os.Args[1:]))
}

// bench holds the settings and the resources of one run.
type bench struct {
	smoke        bool
	rounds       int
	signDur      time.Duration
	clients      []int
	keyTypes     []signer.KeyType
	startRuns    int
	logins       int
	ansibleRuns  int
	costMin      time.Duration
	certHour     time.Duration
	fleetLogins  int
	certPairs    int
	loginKeyType signer.KeyType
	skip         map[string]bool
	out          io.Writer // progress lines

	tmp, home             string
	agentBin, emulatorBin string
	user                  *vmUser

	mu       sync.Mutex
	cleanups []func()
}

func (b *bench) onCleanup(f func()) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.cleanups = append(b.cleanups, f)
}

// cleanup runs the cleanups in reverse order, once.
func (b *bench) cleanup() {
	b.mu.Lock()
	fs := b.cleanups
	b.cleanups = nil
	b.mu.Unlock()
	for i := len(fs) - 1; i >= 0; i-- {
		fs[i]()
	}
}

func (b *bench) progress(format string, args ...any) {
	b.mu.Lock()
	defer b.mu.Unlock()
	fmt.Fprintf(b.out, format+"\n", args...)
}

func run(args []string) int {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	var (
		smoke    = fs.Bool("smoke", false, "short run for the test suite: tiny N, one round, no Ansible; targets reported, not judged")
		jsonOut  = fs.Bool("json", false, "print the results as JSON on stdout (the table goes to stderr)")
		rounds   = fs.Int("rounds", 3, "signing rounds per agent (alternating order)")
		signDur  = fs.Duration("duration", 1500*time.Millisecond, "length of one signing measurement")
		clients  = fs.String("clients", "1,8,64", "concurrent clients (one connection each)")
		keyTypes = fs.String("key-types", "ed25519,ecdsa-p256,rsa-3072", "key types for the signing benchmark")
		starts   = fs.Int("starts", 5, "start-to-ready runs per scenario")
		logins   = fs.Int("logins", 20, "logins (ssh host true) per agent")
		ansible  = fs.Int("ansible", 3, "Ansible playbook runs per agent (0: none)")
		costMin  = fs.Duration("api-cost-min", 60*time.Second, "minimum running time of the API-cost agent")
		certHour = fs.Duration("cert-hour", 150*time.Second, "continuous use of certificate-only VMs with 60 s certificates (0: none)")
		fleetN   = fs.Int("fleet-logins", 10, "fleet: `ssh vm true` per path")
		pairs    = fs.Int("cert-pairs", 20, "fleet: ABBA pairs, cached certificate against key VM")
		skip     = fs.String("skip", "", "comma-separated parts to skip: sign,start,logins,ansible,api,tunnel,fleet")
		quiet    = fs.Bool("q", false, "no progress lines")
	)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	b := &bench{
		smoke: *smoke, rounds: *rounds, signDur: *signDur, startRuns: *starts,
		logins: *logins, ansibleRuns: *ansible, costMin: *costMin, certHour: *certHour,
		fleetLogins: *fleetN, certPairs: *pairs,
		loginKeyType: signer.Ed25519, skip: map[string]bool{}, out: os.Stderr,
	}
	if *quiet {
		b.out = io.Discard
	}
	if b.smoke {
		b.rounds, b.signDur, b.startRuns, b.logins, b.ansibleRuns, b.costMin = 1, 150*time.Millisecond, 1, 2, 0, 0
		b.fleetLogins, b.certPairs, b.certHour = 1, 1, 0
	}
	for _, s := range strings.Split(*clients, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			fmt.Fprintf(os.Stderr, "bench: --clients: bad count %q\n", s)
			return 2
		}
		b.clients = append(b.clients, n)
	}
	for _, s := range strings.Split(*keyTypes, ",") {
		kt, err := signer.ParseKeyType(strings.TrimSpace(s))
		if err != nil {
			fmt.Fprintf(os.Stderr, "bench: --key-types: %v\n", err)
			return 2
		}
		b.keyTypes = append(b.keyTypes, kt)
	}
	for _, s := range strings.Split(*skip, ",") {
		if s = strings.TrimSpace(s); s != "" {
			b.skip[s] = true
		}
	}
	if b.rounds < 1 || b.signDur <= 0 || b.startRuns < 1 || b.logins < 1 || b.fleetLogins < 1 || b.certPairs < 1 {
		fmt.Fprintln(os.Stderr, "bench: --rounds, --duration, --starts, --logins, --fleet-logins and --cert-pairs must be positive")
		return 2
	}

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-sigs
		fmt.Fprintln(os.Stderr, "bench: interrupted; cleaning up")
		b.cleanup()
		os.Exit(130)
	}()
	defer b.cleanup()

	rep, err := b.run()
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		return 1
	}
	rep.Command = "go run ./scripts/bench " + strings.Join(args, " ")
	table := os.Stdout
	if *jsonOut {
		table = os.Stderr
	}
	rep.print(table)
	if *jsonOut {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			fmt.Fprintf(os.Stderr, "bench: %v\n", err)
			return 1
		}
	}
	return 0
}

// run sets up and measures everything.
func (b *bench) run() (*Report, error) {
	for _, tool := range []string{"ssh-agent", "ssh-add", "ssh-keygen", "ssh", "go"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("%s is not installed (apt-get install openssh-client openssh-server)", tool)
		}
	}
	tmp, err := os.MkdirTemp("", "oslogin-bench-")
	if err != nil {
		return nil, err
	}
	b.onCleanup(func() { os.RemoveAll(tmp) })
	// Everyone may enter: sshd runs the AuthorizedKeysCommand (the emulator
	// binary under bin/) as nobody when we are root.
	if err := os.Chmod(tmp, 0o755); err != nil {
		return nil, err
	}
	b.tmp, b.home = tmp, filepath.Join(tmp, "home")
	if err := os.Mkdir(b.home, 0o700); err != nil {
		return nil, err
	}
	if err := b.build(); err != nil {
		return nil, err
	}
	if b.user, err = b.loginUser(); err != nil {
		return nil, err
	}

	rep := &Report{Smoke: b.smoke, Machine: machine(), Date: time.Now().UTC().Format(time.RFC3339),
		Rounds: b.rounds, SignSeconds: b.signDur.Seconds(), Clients: b.clients}

	var cost *apiCostRun
	if !b.skip["api"] {
		b.progress("API cost: an agent with --ttl %v --rotate %v runs in the background", costTTL, costRotate)
		if cost, err = b.startAPICost(); err != nil {
			return nil, fmt.Errorf("API cost: %w", err)
		}
	}
	if !b.skip["sign"] {
		for _, kt := range b.keyTypes {
			b.progress("signing, %s", kt)
			rows, mem, err := b.signBench(kt)
			if err != nil {
				return nil, fmt.Errorf("signing %s: %w", kt, err)
			}
			rep.Signing = append(rep.Signing, rows...)
			rep.Memory = append(rep.Memory, mem...)
		}
	}
	if !b.skip["start"] {
		b.progress("start to ready")
		if rep.Startup, err = b.startBench(); err != nil {
			return nil, err
		}
	}
	if !b.skip["logins"] {
		b.progress("real logins")
		if b.skip["ansible"] {
			b.ansibleRuns = 0
		}
		if _, err := os.Stat(sshd.Binary); err != nil {
			b.progress("  " + sshd.Binary + " is not installed; logins skipped")
		} else if rep.Logins, rep.Ansible, err = b.loginBench(); err != nil {
			return nil, fmt.Errorf("logins: %w", err)
		}
	}
	if !b.skip["tunnel"] {
		b.progress("IAP tunnel: gcloud, iaptunnel and direct TCP through the emulator's relay")
		if rep.Tunnel, err = b.tunnelBench(); err != nil {
			return nil, fmt.Errorf("tunnel: %w", err)
		}
	}
	if !b.skip["fleet"] {
		b.progress("fleet: proxy --fdpass, gcloud and direct set-up, Google calls, Ansible over the relay, certificates")
		if b.skip["ansible"] {
			b.ansibleRuns = 0
		}
		if _, err := os.Stat(sshd.Binary); err != nil {
			b.progress("  " + sshd.Binary + " is not installed; fleet skipped")
		} else if rep.Fleet, err = b.fleetBench(); err != nil {
			return nil, fmt.Errorf("fleet: %w", err)
		}
	}
	if cost != nil {
		if d := b.costMin - time.Since(cost.start); d > 0 {
			b.progress("API cost: waiting %v more for the background agent", d.Round(time.Second))
		}
		if rep.APIHour, err = cost.finish(b.costMin); err != nil {
			return nil, fmt.Errorf("API cost: %w", err)
		}
	}
	rep.judge()
	return rep, nil
}

// build compiles the agent and the emulator into the run's directory.
func (b *bench) build() error {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return errors.New("run the bench from inside the oslogin-agent module (go run ./scripts/bench)")
	}
	root := filepath.Dir(gomod)
	bin := filepath.Join(b.tmp, "bin")
	if err := os.Mkdir(bin, 0o755); err != nil {
		return err
	}
	b.agentBin, b.emulatorBin = filepath.Join(bin, "oslogin-agent"), filepath.Join(bin, "oslogin-emulator")
	for out, pkg := range map[string]string{b.agentBin: "./cmd/oslogin-agent", b.emulatorBin: "./cmd/oslogin-emulator"} {
		cmd := exec.Command("go", "build", "-o", out, pkg)
		cmd.Dir = root
		if err := runQuiet(cmd); err != nil {
			return err
		}
	}
	return nil
}
