package main

import (
	"encoding/pem"
	"fmt"
	"io"
	"maps"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/oslogin-agent/oslogin-agent/internal/emulator"
	"github.com/oslogin-agent/oslogin-agent/internal/sshd"
)

// The fleet part (issues 9 and 10): emulated instances, each its own sshd
// publishing its host keys, some reachable only through the emulator's IAP
// relay, some with an external address, some certificate-only; one agent
// started with OSLOGIN_EMULATOR_HOST, so the emulator is its Compute API,
// relay and certificate authority. ssh reaches them through
// `oslogin-agent proxy --fdpass` (ProxyUseFdpass yes), through gcloud's
// start-iap-tunnel as ProxyCommand, or directly. Host keys are checked
// against one known_hosts file under HostKeyAlias compute.ID on every path,
// so host-key lookup costs the same everywhere.

// Names of the set-up paths.
const (
	pathDirect   = "ssh direct (no proxy), external-address VM"
	pathFdDirect = "agent proxy --fdpass, external-address VM"
	pathFdIAP    = "agent proxy --fdpass, IAP-only VM"
	pathGcloud   = "gcloud start-iap-tunnel ProxyCommand, IAP-only VM"
)

// signMethod is OS Login's certificate-signing call as the emulator counts it.
const signMethod = "projects.locations.signSshPublicKey"

// FleetResult is what the fleet part measured.
type FleetResult struct {
	SetupN       int                  `json:"setup_logins_per_path"`
	SetupMedianS map[string]float64   `json:"setup_median_s"`
	SetupRunsS   map[string][]float64 `json:"setup_runs_s"`
	// GoogleCalls are compute.*, metadata.token and oauth2.token requests
	// during the timed connections of each path (the first connection to
	// each VM, a warm-up, is not among them).
	GoogleCalls map[string]map[string]int `json:"google_calls_after_first"`
	FirstCalls  map[string]int            `json:"google_calls_first_connections"`
	// Components are the parts of a set-up run alone, medians in seconds:
	// sshd's AuthorizedKeysCommand, the proxy processes with stdin at EOF.
	Components     map[string]float64 `json:"components_median_s,omitempty"`
	Relay          *RelayAnsible      `json:"ansible_over_relay,omitempty"`
	Certs          *CertResult        `json:"certificates,omitempty"`
	LoadAvgBefore  string             `json:"loadavg_before"`
	LoadAvgAfter   string             `json:"loadavg_after"`
	Notes          []string           `json:"notes,omitempty"`
	GcloudVersion  string             `json:"gcloud_version,omitempty"`
	AnsibleVersion string             `json:"ansible_version,omitempty"`
}

// RelayAnsible compares a playbook over IAP-only VMs with gcloud's tunnel
// and with the agent's proxy as ProxyCommand.
type RelayAnsible struct {
	Hosts, Tasks, Forks, Runs int
	GcloudRunsS, AgentRunsS   []float64
	DirectRunsS               []float64 // the same VMs without any proxy: Ansible's and sshd's own time
	GcloudMedianS             float64
	AgentMedianS              float64
	DirectMedianS             float64
	Speedup                   float64 // gcloud / agent
	AgentGoogleCalls          map[string]int
	Connections               int // ssh connections per run (hosts × tasks)
}

// CertResult is issue 10: signing calls and set-up with a cached certificate.
type CertResult struct {
	Destinations     int       `json:"certificate_only_vms"`
	AnsibleSigns     []int     `json:"signing_calls_per_ansible_run"`
	AnsibleRunsS     []float64 `json:"ansible_runs_s"`
	ABBAN            int       `json:"abba_pairs"`
	CertMedianS      float64   `json:"cert_cached_median_s"`
	KeyMedianS       float64   `json:"key_vm_median_s"`
	Ratio            float64   `json:"ratio"`
	CertRunsS        []float64 `json:"cert_runs_s"`
	KeyRunsS         []float64 `json:"key_runs_s"`
	ABBASigns        int       `json:"signing_calls_during_abba"`
	Hour             *CertHour `json:"compressed_hour,omitempty"`
	ClockAdvanceNote string    `json:"clock_advance_probe,omitempty"`
}

// CertHour is signing over a stretch of continuous use with a short
// certificate lifetime, scaled to the real 5-minute one.
type CertHour struct {
	LifetimeS       float64 `json:"lifetime_s"`
	DurationS       float64 `json:"duration_s"`
	Destinations    int     `json:"destinations"`
	Connections     int     `json:"connections"`
	Failures        int     `json:"failures"`
	Signs           int     `json:"signing_calls"`
	PerDest         float64 `json:"signing_calls_per_destination"`
	ExpectedPerDest float64 `json:"expected_per_destination"` // 1 + duration / reuse, from the agent's refresh rule
	// PerDestPerLT is the renewals (calls after each VM's first) per VM
	// per certificate lifetime; ExpectedPerLT is lifetime / reuse.
	PerDestPerLT  float64 `json:"renewals_per_destination_per_lifetime"`
	ExpectedPerLT float64 `json:"expected_renewals_per_destination_per_lifetime"`
	Per5MinHour   float64 `json:"per_destination_per_hour_at_5min"` // same rule, 5-minute certificates
}

// certReuse is how long the agent offers one certificate: from signing to
// its refresh point, a quarter of the validity (lifetime + the CA's 30 s
// backdate) but at most 30 s before its end (agent/certs.go refreshMargin).
func certReuse(lifetime time.Duration) time.Duration {
	validity := lifetime + 30*time.Second
	return lifetime - min(30*time.Second, validity/4)
}

// fleetVM is one emulated instance and the sshd playing it.
type fleetVM struct {
	name     string
	direct   bool
	certOnly bool
	id       string
	srv      *sshd.Server
}

// fleetEnv is a running fleet.
type fleetEnv struct {
	e          *emu
	tls        *httptest.Server
	wssURL     string
	caFile     string
	tokenFile  string
	project    string
	zone       string
	agent      *oslAgent
	vms        map[string]*fleetVM
	dir        string
	knownHosts string
	env        []string          // for ssh, gcloud and ansible
	configs    map[string]string // ssh_config per way of connecting: direct, agent, gcloud
}

func isGoogleCall(m string) bool {
	return strings.HasPrefix(m, "compute.") || m == "metadata.token" || m == "oauth2.token"
}

func googleOnly(calls map[string]int) map[string]int {
	g := map[string]int{}
	for m, c := range calls {
		if isGoogleCall(m) {
			g[m] = c
		}
	}
	return g
}

func sum(m map[string]int) int {
	n := 0
	for _, c := range m {
		n += c
	}
	return n
}

// startFleet starts the emulator (plain HTTP for the agent and sshd, TLS
// for gcloud), one sshd per VM and the agent.
func (b *bench) startFleet(dir string, specs []fleetVM, lifetime time.Duration) (*fleetEnv, error) {
	cfg := b.emuConfig()
	cfg.CertificateLifetime = lifetime
	for _, s := range specs {
		in := emulator.Instance{Name: s.name}
		if s.direct {
			in.NatIP = "127.0.0.1"
		}
		if s.certOnly {
			in.Metadata = map[string]string{emulator.MetaEnableCertificates: "TRUE"}
		}
		cfg.Instances = append(cfg.Instances, in)
	}
	e, err := startEmulator(cfg)
	if err != nil {
		return nil, err
	}
	b.onCleanup(e.Close)
	f := &fleetEnv{e: e, dir: dir, project: e.Config().ProjectID, zone: e.Config().Zone, vms: map[string]*fleetVM{},
		knownHosts: filepath.Join(dir, "known_hosts"), configs: map[string]string{}}
	f.tls = httptest.NewUnstartedServer(e.Handler())
	f.tls.StartTLS()
	b.onCleanup(f.tls.Close)
	f.wssURL = "wss://" + f.tls.Listener.Addr().String() + "/v4"
	f.caFile = filepath.Join(dir, "relay-ca.pem")
	if err := os.WriteFile(f.caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: f.tls.Certificate().Raw}), 0o644); err != nil {
		return nil, err
	}
	tok, err := e.MintToken(e.Email, emulator.ScopeCloudPlatform)
	if err != nil {
		return nil, err
	}
	f.tokenFile = filepath.Join(dir, "token")
	if err := os.WriteFile(f.tokenFile, []byte(tok), 0o600); err != nil {
		return nil, err
	}
	var kh strings.Builder
	for _, s := range specs {
		vm := s
		sdir := filepath.Join(dir, "vm-"+s.name)
		if err := os.Mkdir(sdir, 0o755); err != nil {
			return nil, err
		}
		srv, err := sshd.Start(sshd.Options{Dir: sdir, Emulator: b.emulatorBin, MetadataHost: e.Host, KeysUser: b.user.akcUser,
			Instance: s.name, CertificateOnly: s.certOnly, PublishHostKeys: true})
		if err != nil {
			return nil, fmt.Errorf("sshd for %s: %w", s.name, err)
		}
		b.onCleanup(srv.Stop)
		in, err := e.LookupInstance("", s.name)
		if err != nil {
			return nil, err
		}
		vm.srv, vm.id = srv, in.ID
		f.vms[s.name] = &vm
		fmt.Fprintf(&kh, "compute.%s %s\n", in.ID, srv.HostKey)
	}
	if err := os.WriteFile(f.knownHosts, []byte(kh.String()), 0o644); err != nil {
		return nil, err
	}
	f.agent, err = b.startOslAgentEnv(e, filepath.Join(dir, "agent.sock"), filepath.Join(dir, "agent.log"),
		[]string{"OSLOGIN_EMULATOR_HOST=" + e.Host}, "--propagation", "0s", "--certificates", "auto")
	if err != nil {
		return nil, err
	}
	if f.agent.user != b.user.name {
		return nil, fmt.Errorf("oslogin-agent reports user %q, want %q", f.agent.user, b.user.name)
	}
	f.env = cleanEnv(b.home, "127.0.0.1:1",
		"OSLOGIN_EMULATOR_HOST="+e.Host, "SSH_AUTH_SOCK="+f.agent.sock,
		"CLOUDSDK_CONFIG="+filepath.Join(dir, "gcloud"), "CLOUDSDK_AUTH_ACCESS_TOKEN_FILE="+f.tokenFile,
		"CLOUDSDK_CORE_DISABLE_PROMPTS=1", "CLOUDSDK_CORE_CUSTOM_CA_CERTS_FILE="+f.caFile,
		"CLOUDSDK_CORE_DISABLE_USAGE_REPORTING=true", "CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK=true")
	gcloud, _ := exec.LookPath("gcloud")
	proxies := map[string]string{
		"direct": "",
		"agent":  "ProxyCommand " + b.agentBin + " proxy --fdpass --project " + f.project + " %n %p\n  ProxyUseFdpass yes\n",
	}
	if gcloud != "" {
		proxies["gcloud"] = "ProxyCommand " + gcloud + " compute start-iap-tunnel %n %p --listen-on-stdin --zone " + f.zone +
			" --project " + f.project + " --iap-tunnel-url-override=" + f.wssURL + " --verbosity=warning\n  ProxyUseFdpass no\n"
	}
	for way, proxy := range proxies {
		var c strings.Builder
		for _, s := range specs {
			vm := f.vms[s.name]
			fmt.Fprintf(&c, "Host %s\n  HostKeyAlias compute.%s\n  Port %d\n", vm.name, vm.id, vm.srv.Port)
			if way == "direct" {
				c.WriteString("  HostName 127.0.0.1\n")
			}
		}
		fmt.Fprintf(&c, "Host *\n  User %s\n  UserKnownHostsFile %s\n  GlobalKnownHostsFile /dev/null\n  StrictHostKeyChecking yes\n"+
			"  BatchMode yes\n  IdentityAgent %s\n  ControlMaster no\n  ControlPath none\n  ConnectTimeout 20\n  LogLevel ERROR\n  %s",
			b.user.name, f.knownHosts, f.agent.sock, proxy)
		path := filepath.Join(dir, "ssh_config."+way)
		if err := os.WriteFile(path, []byte(c.String()), 0o644); err != nil {
			return nil, err
		}
		f.configs[way] = path
	}
	return f, nil
}

// login runs `ssh -F config vm true` and times it.
func (f *fleetEnv) login(way, vm string) (time.Duration, error) {
	cmd := exec.Command("ssh", "-F", f.configs[way], vm, "true")
	cmd.Env = f.env
	t := time.Now()
	err := runQuiet(cmd)
	return time.Since(t), err
}

func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	return strings.Join(strings.Fields(string(b))[:3], " ")
}

// fleetBench runs issue 9's set-up, API-cost and Ansible measurements and
// issue 10's certificate measurements.
func (b *bench) fleetBench() (*FleetResult, error) {
	dir, err := os.MkdirTemp(b.tmp, "fleet")
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, err
	}
	specs := []fleetVM{{name: "iap-1"}, {name: "iap-2"}, {name: "iap-3"}, {name: "ext-1", direct: true},
		{name: "cert-1", direct: true, certOnly: true}, {name: "cert-2", direct: true, certOnly: true}, {name: "cert-3", direct: true, certOnly: true}}
	if b.smoke {
		specs = []fleetVM{{name: "iap-1"}, {name: "ext-1", direct: true}, {name: "cert-1", direct: true, certOnly: true}}
	}
	res := &FleetResult{SetupN: b.fleetLogins, SetupMedianS: map[string]float64{}, SetupRunsS: map[string][]float64{},
		GoogleCalls: map[string]map[string]int{}, LoadAvgBefore: loadavg()}
	f, err := b.startFleet(dir, specs, 0)
	if err != nil {
		return nil, err
	}
	_, hasGcloud := f.configs["gcloud"]
	if hasGcloud {
		if out, err := exec.Command("gcloud", "version", "--format=value(\"Google Cloud SDK\")").Output(); err == nil {
			res.GcloudVersion = strings.TrimSpace(string(out))
		}
	} else {
		res.Notes = append(res.Notes, "gcloud is not installed: no gcloud figures")
	}
	if b.smoke {
		hasGcloud = false // the tunnel part already runs gcloud once; keep the smoke short
	}

	// Issue 9: set-up time per path, interleaved (ABCD, DCBA, ...).
	type path struct{ name, way, vm string }
	paths := []path{{pathDirect, "direct", "ext-1"}, {pathFdDirect, "agent", "ext-1"}, {pathFdIAP, "agent", "iap-1"}}
	if hasGcloud {
		paths = append(paths, path{pathGcloud, "gcloud", "iap-1"})
	}
	before := f.e.Calls()
	for _, p := range paths { // first connection: lookups, tokens, sshd's first run
		if _, err := f.login(p.way, p.vm); err != nil {
			return nil, fmt.Errorf("%s: %w", p.name, err)
		}
	}
	res.FirstCalls = googleOnly(diffCalls(before, f.e.Calls()))
	b.progress("  fleet: first connections asked Google %v", res.FirstCalls)
	for r := range res.SetupN {
		for i := range paths {
			p := paths[i]
			if r%2 == 1 {
				p = paths[len(paths)-1-i]
			}
			c0 := f.e.Calls()
			d, err := f.login(p.way, p.vm)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", p.name, err)
			}
			g := googleOnly(diffCalls(c0, f.e.Calls()))
			if res.GoogleCalls[p.name] == nil {
				res.GoogleCalls[p.name] = map[string]int{}
			}
			for m, c := range g {
				res.GoogleCalls[p.name][m] += c
			}
			res.SetupRunsS[p.name] = append(res.SetupRunsS[p.name], d.Seconds())
		}
	}
	for p, v := range res.SetupRunsS {
		res.SetupMedianS[p] = median(v)
	}
	b.progress("  fleet: ssh true medians %v", res.SetupMedianS)
	if res.Components, err = b.components(f, hasGcloud, res.SetupN); err != nil {
		return nil, err
	}

	// Issue 10 on the same fleet: signing per Ansible run, then set-up with
	// a cached certificate against a key VM.
	var certVMs []string
	for _, s := range specs {
		if s.certOnly {
			certVMs = append(certVMs, s.name)
		}
	}
	res.Certs = &CertResult{Destinations: len(certVMs)}
	_, err = exec.LookPath("ansible-playbook")
	hasAnsible := err == nil && b.ansibleRuns > 0
	if hasAnsible {
		if out, err := exec.Command("ansible-playbook", "--version").Output(); err == nil {
			res.AnsibleVersion = strings.SplitN(strings.TrimSpace(string(out)), "\n", 2)[0]
		}
		for i := range 2 {
			s0 := f.e.Calls()[signMethod]
			d, err := b.fleetAnsible(f, "agent", certVMs, 10)
			if err != nil {
				return nil, fmt.Errorf("ansible over certificate-only VMs: %w", err)
			}
			n := f.e.Calls()[signMethod] - s0
			res.Certs.AnsibleSigns = append(res.Certs.AnsibleSigns, n)
			res.Certs.AnsibleRunsS = append(res.Certs.AnsibleRunsS, d.Seconds())
			b.progress("  fleet: ansible over %d certificate-only VMs, run %d: %.2f s, %d signing calls", len(certVMs), i+1, d.Seconds(), n)
		}
	}
	if err := b.certABBA(f, res.Certs); err != nil {
		return nil, err
	}

	// Issue 9: Ansible over the IAP-only VMs, gcloud's tunnel against the
	// agent's proxy as ProxyCommand, ControlPersist off.
	if hasAnsible && hasGcloud {
		var iap []string
		for _, s := range specs {
			if !s.direct {
				iap = append(iap, s.name)
			}
		}
		if res.Relay, err = b.relayAnsible(f, iap); err != nil {
			return nil, err
		}
	}
	res.LoadAvgAfter = loadavg()

	if !b.smoke && b.certHour > 0 {
		if res.Certs.Hour, res.Certs.ClockAdvanceNote, err = b.certHourBench(); err != nil {
			return nil, fmt.Errorf("certificates over time: %w", err)
		}
	}
	return res, nil
}

// components times the pieces of a set-up alone, interleaved: sshd's
// AuthorizedKeysCommand (the emulator binary asking the metadata server,
// run by sshd on every key login), the agent's proxy in stdio mode and
// gcloud's start-iap-tunnel, both with stdin at EOF (process start, lookup,
// connect, exit).
func (b *bench) components(f *fleetEnv, gcloud bool, n int) (map[string]float64, error) {
	cmds := map[string]func() *exec.Cmd{
		"sshd's AuthorizedKeysCommand (emulator authorized-keys)": func() *exec.Cmd {
			return exec.Command(b.emulatorBin, "authorized-keys", "--metadata-host", f.e.Host, "--instance", "ext-1", b.user.name)
		},
		"oslogin-agent --version (process start and exit alone)": func() *exec.Cmd {
			return exec.Command(b.agentBin, "--version")
		},
		"oslogin-agent proxy (stdio), IAP-only VM, stdin at EOF": func() *exec.Cmd {
			return exec.Command(b.agentBin, "proxy", "--project", f.project, "iap-1", fmt.Sprint(f.vms["iap-1"].srv.Port))
		},
		"oslogin-agent proxy (stdio), external-address VM, stdin at EOF": func() *exec.Cmd {
			return exec.Command(b.agentBin, "proxy", "--project", f.project, "ext-1", fmt.Sprint(f.vms["ext-1"].srv.Port))
		},
	}
	if gcloud {
		cmds["gcloud start-iap-tunnel, stdin at EOF"] = func() *exec.Cmd {
			return exec.Command("gcloud", "compute", "start-iap-tunnel", "iap-1", fmt.Sprint(f.vms["iap-1"].srv.Port), "--listen-on-stdin",
				"--zone", f.zone, "--project", f.project, "--iap-tunnel-url-override="+f.wssURL, "--verbosity=warning")
		}
	}
	var names []string
	for name := range cmds {
		names = append(names, name)
	}
	slices.Sort(names)
	times := map[string][]float64{}
	for r := range n {
		for i := range names {
			name := names[i]
			if r%2 == 1 {
				name = names[len(names)-1-i]
			}
			cmd := cmds[name]()
			cmd.Env = f.env
			t := time.Now()
			if err := runQuiet(cmd); err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
			times[name] = append(times[name], time.Since(t).Seconds())
		}
	}
	med := map[string]float64{}
	for name, v := range times {
		med[name] = median(v)
	}
	b.progress("  fleet: components %v", med)
	return med, nil
}

// certABBA times `ssh vm true` to a certificate-only VM whose certificate
// the agent holds against a VM that takes the agent's imported key, both
// through the agent's proxy, in ABBA order.
func (b *bench) certABBA(f *fleetEnv, cr *CertResult) error {
	n := b.certPairs
	for _, vm := range []string{"cert-1", "ext-1"} { // the certificate is cached after this
		if _, err := f.login("agent", vm); err != nil {
			return fmt.Errorf("%s: %w", vm, err)
		}
	}
	s0 := f.e.Calls()[signMethod]
	for i := range n {
		order := []string{"cert-1", "ext-1"}
		if i%2 == 1 {
			order = []string{"ext-1", "cert-1"}
		}
		for _, vm := range order {
			d, err := f.login("agent", vm)
			if err != nil {
				return fmt.Errorf("%s: %w", vm, err)
			}
			if vm == "cert-1" {
				cr.CertRunsS = append(cr.CertRunsS, d.Seconds())
			} else {
				cr.KeyRunsS = append(cr.KeyRunsS, d.Seconds())
			}
		}
	}
	cr.ABBAN = n
	cr.ABBASigns = f.e.Calls()[signMethod] - s0
	cr.CertMedianS, cr.KeyMedianS = median(cr.CertRunsS), median(cr.KeyRunsS)
	if cr.KeyMedianS > 0 {
		cr.Ratio = cr.CertMedianS / cr.KeyMedianS
	}
	b.progress("  fleet: cached certificate %.3f s, key VM %.3f s, ratio %.3f; signing calls %d", cr.CertMedianS, cr.KeyMedianS, cr.Ratio, cr.ABBASigns)
	return nil
}

// relayPlaybook is small on purpose: with pipelining and ControlPersist
// off, each task is one ssh connection per host, so set-up dominates.
const relayPlaybook = `- hosts: all
  gather_facts: false
  tasks:
    - ping:
    - command: id -un
      register: who
      changed_when: false
    - assert:
        that: who.stdout == ansible_user
    - command: "true"
      changed_when: false
`

const relayTasks = 4

var fleetRecapRE = regexp.MustCompile(`(?m)^(\S+)\s+: ok=(\d+)\s+changed=\d+\s+unreachable=(\d+)\s+failed=(\d+)`)

// fleetAnsible runs relayPlaybook over hosts with the ssh_config of way
// (ControlMaster no: every task pays the set-up).
func (b *bench) fleetAnsible(f *fleetEnv, way string, hosts []string, forks int) (time.Duration, error) {
	adir, err := os.MkdirTemp(f.dir, "ansible-"+way)
	if err != nil {
		return 0, err
	}
	inv := "[vms]\n" + strings.Join(hosts, "\n") + "\n\n[vms:vars]\nansible_user=" + b.user.name + "\n"
	cfg := fmt.Sprintf(`[defaults]
inventory = %s
forks = %d
interpreter_python = /usr/bin/python3
retry_files_enabled = False
timeout = 30
local_tmp = %s
[ssh_connection]
ssh_args = -F %s
pipelining = True
`, filepath.Join(adir, "inventory.ini"), forks, filepath.Join(adir, "tmp"), f.configs[way])
	for name, content := range map[string]string{"inventory.ini": inv, "site.yml": relayPlaybook, "ansible.cfg": cfg} {
		if err := os.WriteFile(filepath.Join(adir, name), []byte(content), 0o644); err != nil {
			return 0, err
		}
	}
	cmd := exec.Command("ansible-playbook", filepath.Join(adir, "site.yml"))
	cmd.Dir = adir
	cmd.Env = append(append([]string{}, f.env...), "ANSIBLE_CONFIG="+filepath.Join(adir, "ansible.cfg"), "ANSIBLE_NOCOLOR=1")
	t := time.Now()
	out, err := cmd.CombinedOutput()
	d := time.Since(t)
	if err != nil {
		return 0, fmt.Errorf("ansible-playbook (%s): %v\n%s", way, err, tail(out))
	}
	rows := fleetRecapRE.FindAllStringSubmatch(string(out), -1)
	if len(rows) != len(hosts) {
		return 0, fmt.Errorf("ansible recap has %d hosts, want %d:\n%s", len(rows), len(hosts), tail(out))
	}
	for _, r := range rows {
		if r[2] != fmt.Sprint(relayTasks) || r[3] != "0" || r[4] != "0" {
			return 0, fmt.Errorf("ansible (%s): %s ok=%s unreachable=%s failed=%s\n%s", way, r[1], r[2], r[3], r[4], tail(out))
		}
	}
	return d, nil
}

// relayAnsible alternates gcloud and the agent (ABBA) over the IAP-only VMs.
func (b *bench) relayAnsible(f *fleetEnv, hosts []string) (*RelayAnsible, error) {
	forks := max(3, len(hosts))
	ra := &RelayAnsible{Hosts: len(hosts), Tasks: relayTasks, Forks: forks, Runs: b.ansibleRuns,
		Connections: len(hosts) * relayTasks, AgentGoogleCalls: map[string]int{}}
	// Warm-up, not counted: gcloud's and ansible's byte-compiled files.
	ways := []string{"gcloud", "agent", "direct"}
	for _, way := range ways {
		if _, err := b.fleetAnsible(f, way, hosts, forks); err != nil {
			return nil, err
		}
	}
	for i := range b.ansibleRuns {
		order := ways
		if i%2 == 1 {
			order = []string{ways[2], ways[1], ways[0]}
		}
		for _, way := range order {
			c0 := f.e.Calls()
			d, err := b.fleetAnsible(f, way, hosts, forks)
			if err != nil {
				return nil, err
			}
			switch way {
			case "agent":
				ra.AgentRunsS = append(ra.AgentRunsS, d.Seconds())
				for m, c := range googleOnly(diffCalls(c0, f.e.Calls())) {
					ra.AgentGoogleCalls[m] += c
				}
			case "gcloud":
				ra.GcloudRunsS = append(ra.GcloudRunsS, d.Seconds())
			default:
				ra.DirectRunsS = append(ra.DirectRunsS, d.Seconds())
			}
			b.progress("  fleet: ansible over %d IAP-only VMs through %s, run %d: %.2f s", len(hosts), way, i+1, d.Seconds())
		}
	}
	ra.GcloudMedianS, ra.AgentMedianS, ra.DirectMedianS = median(ra.GcloudRunsS), median(ra.AgentRunsS), median(ra.DirectRunsS)
	if ra.AgentMedianS > 0 {
		ra.Speedup = ra.GcloudMedianS / ra.AgentMedianS
	}
	return ra, nil
}

// certHourBench connects round-robin to three certificate-only VMs for
// b.certHour with certificates of a short lifetime, counts the signing
// calls and compares them with the agent's refresh rule. Then it probes
// the emulator-clock alternative: it advances the emulator's clock by one
// 5-minute lifetime and tries one more login.
func (b *bench) certHourBench() (*CertHour, string, error) {
	dir, err := os.MkdirTemp(b.tmp, "certhour")
	if err != nil {
		return nil, "", err
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, "", err
	}
	const lifetime = 60 * time.Second
	specs := []fleetVM{{name: "cert-1", direct: true, certOnly: true}, {name: "cert-2", direct: true, certOnly: true},
		{name: "cert-3", direct: true, certOnly: true}}
	f, err := b.startFleet(dir, specs, lifetime)
	if err != nil {
		return nil, "", err
	}
	h := &CertHour{LifetimeS: lifetime.Seconds(), Destinations: len(specs)}
	b.progress("  certificates over time: %d VMs, %v certificates, connecting for %v", len(specs), lifetime, b.certHour)
	s0 := f.e.Calls()[signMethod]
	start := time.Now()
	for i := 0; time.Since(start) < b.certHour; i++ {
		if _, err := f.login("agent", specs[i%len(specs)].name); err != nil {
			h.Failures++
			b.progress("  certificates over time: %s: %v", specs[i%len(specs)].name, err)
		}
		h.Connections++
	}
	h.DurationS = time.Since(start).Seconds()
	h.Signs = f.e.Calls()[signMethod] - s0
	h.PerDest = float64(h.Signs) / float64(len(specs))
	h.ExpectedPerDest = 1 + float64(int(h.DurationS/certReuse(lifetime).Seconds()))
	h.PerDestPerLT = (h.PerDest - 1) / (h.DurationS / lifetime.Seconds())
	h.ExpectedPerLT = lifetime.Seconds() / certReuse(lifetime).Seconds()
	h.Per5MinHour = time.Hour.Seconds() / certReuse(5*time.Minute).Seconds()
	b.progress("  certificates over time: %d signing calls in %.0f s over %d connections (%d failed): %.2f per VM (rule: %.0f), %.2f renewals per VM per lifetime",
		h.Signs, h.DurationS, h.Connections, h.Failures, h.PerDest, h.ExpectedPerDest, h.PerDestPerLT)

	// The emulator-clock probe.
	f.e.Advance(5 * time.Minute)
	s1 := f.e.Calls()[signMethod]
	_, perr := f.login("agent", "cert-1")
	note := fmt.Sprintf("after advancing the emulator's clock by 5 min, a login to cert-1: error=%v, signing calls %d", perr, f.e.Calls()[signMethod]-s1)
	b.progress("  " + note)
	return h, note, nil
}

// print writes the fleet section.
func (r *FleetResult) print(w io.Writer) {
	fmt.Fprintf(w, "\nFleet (issues 9, 10) — emulated VMs, one sshd each, host keys checked by HostKeyAlias on every path;\n")
	fmt.Fprintf(w, "`ssh vm true`, %d per path after one warm-up each, interleaved; load average %s before, %s after\n", r.SetupN, r.LoadAvgBefore, r.LoadAvgAfter)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  path\tmedian s\tmin\tmax\tGoogle calls after the first\t")
	for _, p := range []string{pathDirect, pathFdDirect, pathFdIAP, pathGcloud} {
		v, ok := r.SetupRunsS[p]
		if !ok {
			continue
		}
		fmt.Fprintf(tw, "  %s\t%.3f\t%.3f\t%.3f\t%d %v\t\n", p, r.SetupMedianS[p], minF(v), maxF(v), sum(r.GoogleCalls[p]), r.GoogleCalls[p])
	}
	tw.Flush()
	fmt.Fprintf(w, "  first connection of each path asked Google: %v\n", r.FirstCalls)
	if len(r.Components) > 0 {
		fmt.Fprintf(w, "  pieces alone (median of %d):\n", r.SetupN)
		names := slices.Sorted(maps.Keys(r.Components))
		for _, n := range names {
			fmt.Fprintf(w, "    %-66s %.3f s\n", n, r.Components[n])
		}
	}
	if d := r.SetupMedianS[pathDirect]; d > 0 {
		fmt.Fprintf(w, "  fdpass (external VM) / direct ssh: %.3f (goal ≤ 1.15)\n", r.SetupMedianS[pathFdDirect]/d)
	}
	if g := r.SetupMedianS[pathGcloud]; g > 0 {
		fmt.Fprintf(w, "  fdpass (IAP VM) / gcloud ProxyCommand: %.3f (goal ≤ 0.25)\n", r.SetupMedianS[pathFdIAP]/g)
	}
	if a := r.Relay; a != nil {
		fmt.Fprintf(w, "  Ansible, %d tasks over %d IAP-only VMs, forks %d, pipelining, ControlMaster no (%d ssh connections a run):\n",
			a.Tasks, a.Hosts, a.Forks, a.Connections)
		fmt.Fprintf(w, "    gcloud median %.2f s %v, agent proxy median %.2f s %v → %.2f× (goal ≥ 3×); agent's Google calls %v\n",
			a.GcloudMedianS, fmtSecs(a.GcloudRunsS), a.AgentMedianS, fmtSecs(a.AgentRunsS), a.Speedup, a.AgentGoogleCalls)
		fmt.Fprintf(w, "    the same VMs without a proxy (to 127.0.0.1 directly): median %.2f s %v — Ansible's and sshd's own share\n",
			a.DirectMedianS, fmtSecs(a.DirectRunsS))
	}
	if c := r.Certs; c != nil {
		fmt.Fprintf(w, "  Certificates: %d certificate-only VMs; signing calls per Ansible run %v (runs %v s)\n", c.Destinations, c.AnsibleSigns, fmtSecs(c.AnsibleRunsS))
		fmt.Fprintf(w, "    set-up, ABBA × %d: cached certificate %.3f s, key VM %.3f s, ratio %.3f (goal ≤ 1.05); signing calls meanwhile %d\n",
			c.ABBAN, c.CertMedianS, c.KeyMedianS, c.Ratio, c.ABBASigns)
		if h := c.Hour; h != nil {
			fmt.Fprintf(w, "    continuous use, %.0f s certificates, %.0f s, %d VMs, %d connections (%d failed): %d signing calls = %.2f per VM (rule: %.0f);\n",
				h.LifetimeS, h.DurationS, h.Destinations, h.Connections, h.Failures, h.Signs, h.PerDest, h.ExpectedPerDest)
			fmt.Fprintf(w, "    renewals after the first: %.2f per VM per lifetime (rule: lifetime / reuse = %.2f)\n", h.PerDestPerLT, h.ExpectedPerLT)
			fmt.Fprintf(w, "    the same rule with 5-minute certificates: %.1f per VM per hour (goal ≤ 12)\n", h.Per5MinHour)
		}
		if c.ClockAdvanceNote != "" {
			fmt.Fprintf(w, "    %s\n", c.ClockAdvanceNote)
		}
	}
	for _, n := range r.Notes {
		fmt.Fprintf(w, "  note: %s\n", n)
	}
}

// judge adds the issue 9 and 10 targets.
func (r *FleetResult) judge(add func(name, value, goal string, pass bool)) {
	if d := r.SetupMedianS[pathDirect]; d > 0 {
		v := r.SetupMedianS[pathFdDirect] / d
		add("issue 9: ssh set-up, proxy --fdpass / direct ssh (external VM)", fmt.Sprintf("%.3f", v), "≤ 1.15", v <= 1.15)
	}
	if g := r.SetupMedianS[pathGcloud]; g > 0 {
		v := r.SetupMedianS[pathFdIAP] / g
		add("issue 9: ssh set-up, proxy --fdpass / gcloud (IAP VM)", fmt.Sprintf("%.3f", v), "≤ 0.25", v <= 0.25)
	}
	n := 0
	for _, p := range []string{pathFdDirect, pathFdIAP} {
		n += sum(r.GoogleCalls[p])
	}
	add("issue 9: Google calls per connection after the first", fmt.Sprintf("%d in %d", n, 2*r.SetupN), "0", n == 0)
	if a := r.Relay; a != nil {
		add("issue 9: Ansible over the relay, gcloud / agent", fmt.Sprintf("%.2f×", a.Speedup), "≥ 3×", a.Speedup >= 3)
	}
	if c := r.Certs; c != nil {
		if len(c.AnsibleSigns) > 0 {
			m := 0
			for _, s := range c.AnsibleSigns {
				m = max(m, s)
			}
			add("issue 10: signing calls per Ansible run", fmt.Sprintf("%v for %d VMs", c.AnsibleSigns, c.Destinations), "≤ 1 per VM", m <= c.Destinations)
		}
		if c.Ratio > 0 {
			add("issue 10: set-up, cached certificate / key VM", fmt.Sprintf("%.3f", c.Ratio), "≤ 1.05", c.Ratio <= 1.05)
		}
		if h := c.Hour; h != nil {
			add("issue 10: signing calls per VM per hour (5-min certificates, agent's rule)", fmt.Sprintf("%.1f (at %.0f s: %.2f renewals per lifetime, rule %.2f)", h.Per5MinHour, h.LifetimeS, h.PerDestPerLT, h.ExpectedPerLT),
				"≤ 12", h.Per5MinHour <= 12)
		}
	}
}
