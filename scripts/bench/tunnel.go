package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/oauth2"

	"github.com/oslogin-agent/oslogin-agent/iaptunnel"
	"github.com/oslogin-agent/oslogin-agent/internal/emulator"
	"github.com/oslogin-agent/oslogin-agent/internal/sshd"
)

// Names of the three ways to reach the VM port.
const (
	viaGcloud = "gcloud start-iap-tunnel"
	viaOurs   = "iaptunnel"
	viaDirect = "direct TCP"
)

// tunnelHelperEnv switches this program into a ProxyCommand that tunnels
// stdin/stdout through iaptunnel, so ssh's set-up time is measured through
// the package as gcloud's is through its own process.
const tunnelHelperEnv = "BENCH_TUNNEL_HELPER"

// TunnelResult compares the IAP relay paths side by side.
type TunnelResult struct {
	Bytes      int64              `json:"bytes"`
	Rounds     int                `json:"rounds"`
	MBps       map[string]float64 `json:"mbps"` // median per path
	SSHN       int                `json:"sshN"`
	SSHMedianS map[string]float64 `json:"sshMedianS"`
	Notes      []string           `json:"notes,omitempty"`
}

// tunnelEnv is the relay under test: the emulator's handler over TLS (for
// gcloud, which speaks only wss://) with a token for its account.
type tunnelEnv struct {
	e                                *emu
	tls                              *httptest.Server
	caFile, tokenFile, token, wssURL string
	cfg                              emulator.Config
	gcloud                           string
	client                           *http.Client
}

func (b *bench) tunnelSetup(dir string) (*tunnelEnv, error) {
	cfg := b.emuConfig()
	e, err := startEmulator(cfg)
	if err != nil {
		return nil, err
	}
	b.onCleanup(e.Close)
	ts := httptest.NewUnstartedServer(e.Handler())
	ts.StartTLS()
	b.onCleanup(ts.Close)
	te := &tunnelEnv{e: e, tls: ts, cfg: e.Config(), wssURL: "wss://" + ts.Listener.Addr().String() + "/v4"}
	te.caFile = filepath.Join(dir, "relay-ca.pem")
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ts.Certificate().Raw})
	if err := os.WriteFile(te.caFile, caPEM, 0o644); err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	te.client = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	if te.token, err = e.MintToken(e.Email, emulator.ScopeCloudPlatform); err != nil {
		return nil, fmt.Errorf("minting a token: %w", err)
	}
	te.tokenFile = filepath.Join(dir, "token")
	if err := os.WriteFile(te.tokenFile, []byte(te.token), 0o600); err != nil {
		return nil, err
	}
	if p, err := exec.LookPath("gcloud"); err == nil {
		te.gcloud = p
	}
	return te, nil
}

// gcloudEnv isolates gcloud: its own empty configuration, the emulator's
// token and CA only. (A closed-port HTTPS_PROXY with NO_PROXY=127.0.0.1
// made gcloud's WebSocket connect to the proxy anyway: connection refused;
// isolating it by proxy is left to do.)
func (te *tunnelEnv) gcloudEnv(b *bench, dir string) []string {
	return cleanEnv(b.home, "127.0.0.1:1",
		"CLOUDSDK_CONFIG="+filepath.Join(dir, "gcloud"), "CLOUDSDK_AUTH_ACCESS_TOKEN_FILE="+te.tokenFile,
		"CLOUDSDK_CORE_DISABLE_PROMPTS=1", "CLOUDSDK_CORE_CUSTOM_CA_CERTS_FILE="+te.caFile,
		"CLOUDSDK_CORE_DISABLE_USAGE_REPORTING=true", "CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK=true")
}

func (te *tunnelEnv) gcloudArgs(port int) []string {
	return []string{"compute", "start-iap-tunnel", te.cfg.InstanceName, strconv.Itoa(port), "--listen-on-stdin",
		"--zone", te.cfg.Zone, "--project", te.cfg.ProjectID, "--iap-tunnel-url-override=" + te.wssURL, "--verbosity=warning"}
}

func (te *tunnelEnv) target(port int) iaptunnel.Target {
	return iaptunnel.Target{Project: te.cfg.ProjectID, Zone: te.cfg.Zone, Instance: te.cfg.InstanceName, Port: port}
}

// sink counts what one connection delivers and reports the time from its
// first to its last byte, so process start-up is not in the figure.
func sink(ln net.Listener, want int64) (time.Duration, error) {
	c, err := ln.Accept()
	if err != nil {
		return 0, err
	}
	defer c.Close()
	buf := make([]byte, 256<<10)
	var got int64
	var first time.Time
	for got < want {
		n, err := c.Read(buf)
		if n > 0 && first.IsZero() {
			first = time.Now()
		}
		got += int64(n)
		if err != nil {
			return 0, fmt.Errorf("sink got %d of %d bytes: %w", got, want, err)
		}
	}
	return time.Since(first), nil
}

// bulk sends n bytes to a fresh sink by one path and returns MB/s.
func (b *bench) bulk(te *tunnelEnv, dir, path string, n int64) (float64, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	res := make(chan error, 1)
	var d time.Duration
	go func() {
		var err error
		d, err = sink(ln, n)
		res <- err
	}()
	src := io.LimitReader(zeros{}, n)
	var sendErr error
	switch path {
	case viaDirect:
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			return 0, err
		}
		_, sendErr = io.Copy(c, src)
		defer c.Close()
	case viaOurs:
		c, err := iaptunnel.Dial(context.Background(), te.target(port), iaptunnel.Options{
			TokenSource: oauth2.StaticTokenSource(&oauth2.Token{AccessToken: te.token}), URL: te.wssURL, HTTPClient: te.client})
		if err != nil {
			return 0, err
		}
		_, sendErr = io.Copy(c, src)
		defer c.Close()
	case viaGcloud:
		cmd := exec.Command(te.gcloud, te.gcloudArgs(port)...)
		cmd.Env = te.gcloudEnv(b, dir)
		cmd.Stdin = src
		var stderr strings.Builder
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			return 0, err
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		defer func() {
			cmd.Process.Signal(syscall.SIGTERM)
			<-exited
			exited <- nil
		}()
		select {
		case err := <-res:
			if err != nil {
				return 0, fmt.Errorf("%w; gcloud: %s", err, tail([]byte(stderr.String())))
			}
			return float64(n) / d.Seconds() / 1e6, nil
		case err := <-exited:
			exited <- err
			return 0, fmt.Errorf("gcloud exited before the sink had everything: %v: %s", err, tail([]byte(stderr.String())))
		case <-time.After(2 * time.Minute):
			return 0, fmt.Errorf("gcloud tunnel timed out: %s", tail([]byte(stderr.String())))
		}
	}
	if sendErr != nil {
		return 0, sendErr
	}
	if err := <-res; err != nil {
		return 0, err
	}
	return float64(n) / d.Seconds() / 1e6, nil
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// tunnelBench measures bulk throughput and ssh set-up through gcloud's
// tunnel, iaptunnel and a direct connection, interleaved (ABC, CBA, ...).
func (b *bench) tunnelBench() (*TunnelResult, error) {
	dir, err := os.MkdirTemp(b.tmp, "tunnel")
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, err
	}
	te, err := b.tunnelSetup(dir)
	if err != nil {
		return nil, err
	}
	paths := []string{viaDirect, viaOurs}
	if te.gcloud != "" {
		paths = append(paths, viaGcloud)
	}
	res := &TunnelResult{Bytes: 64 << 20, Rounds: 3, SSHN: 10, MBps: map[string]float64{}, SSHMedianS: map[string]float64{}}
	if b.smoke {
		res.Bytes, res.Rounds, res.SSHN = 4<<20, 1, 1
	}
	if te.gcloud == "" {
		res.Notes = append(res.Notes, "gcloud is not installed: its column is empty")
	}
	mbps := map[string][]float64{}
	for r := range res.Rounds {
		for i := range paths {
			p := paths[i]
			if r%2 == 1 {
				p = paths[len(paths)-1-i]
			}
			v, err := b.bulk(te, dir, p, res.Bytes)
			if err != nil && p == viaGcloud {
				// gcloud is someone else's program: report, do not abort.
				res.Notes = append(res.Notes, fmt.Sprintf("bulk through gcloud failed: %v", err))
				b.progress("  bulk through gcloud failed: %v", err)
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("bulk through %s: %w", p, err)
			}
			mbps[p] = append(mbps[p], v)
		}
	}
	for p, v := range mbps {
		res.MBps[p] = median(v)
	}
	b.progress("  bulk %d MiB: %v", res.Bytes>>20, res.MBps)
	if _, err := os.Stat(sshd.Binary); err != nil {
		res.Notes = append(res.Notes, sshd.Binary+" is not installed: no ssh set-up times")
		return res, nil
	}
	if err := b.sshSetup(te, dir, paths, res); err != nil {
		return nil, fmt.Errorf("ssh set-up: %w", err)
	}
	return res, nil
}

// sshSetup times `ssh vm true` with each path as the ProxyCommand (direct:
// none) against a real sshd that takes keys from the emulator.
func (b *bench) sshSetup(te *tunnelEnv, dir string, paths []string, res *TunnelResult) error {
	key := filepath.Join(dir, "id_ed25519")
	if err := runQuiet(exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "tunnel-bench", "-f", key)); err != nil {
		return err
	}
	pub, err := os.ReadFile(key + ".pub")
	if err != nil {
		return err
	}
	if _, err := te.e.ImportKey(te.e.Email, "", strings.TrimSpace(string(pub)), time.Time{}); err != nil {
		return err
	}
	knownHosts := filepath.Join(dir, "known_hosts")
	s, err := b.startSSHD(dir, te.e, knownHosts)
	if err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	proxy := map[string]string{
		viaGcloud: te.gcloud + " " + strings.Join(te.gcloudArgs(s.Port), " "),
		viaOurs:   self,
	}
	login := func(path string) (time.Duration, error) {
		args := []string{"-F", "/dev/null", "-i", key, "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
			"-o", "UserKnownHostsFile=" + knownHosts, "-o", "StrictHostKeyChecking=yes",
			"-o", "ControlMaster=no", "-o", "LogLevel=ERROR", "-p", strconv.Itoa(s.Port)}
		if p := proxy[path]; p != "" {
			args = append(args, "-o", "ProxyCommand="+p)
		}
		cmd := exec.Command("ssh", append(args, b.user.name+"@127.0.0.1", "true")...)
		cmd.Env = append(te.gcloudEnv(b, dir), tunnelHelperEnv+"=1",
			"BENCH_TUNNEL_URL="+te.wssURL, "BENCH_TUNNEL_CA="+te.caFile, "BENCH_TUNNEL_TOKEN_FILE="+te.tokenFile,
			"BENCH_TUNNEL_TARGET="+strings.Join([]string{te.cfg.ProjectID, te.cfg.Zone, te.cfg.InstanceName, strconv.Itoa(s.Port)}, "/"))
		t := time.Now()
		err := runQuiet(cmd)
		return time.Since(t), err
	}
	for _, p := range paths { // warm-up: page cache, sshd, gcloud's .pyc
		if _, err := login(p); err != nil {
			return fmt.Errorf("ssh through %s: %w", p, err)
		}
	}
	times := map[string][]float64{}
	for r := range res.SSHN {
		for i := range paths {
			p := paths[i]
			if r%2 == 1 {
				p = paths[len(paths)-1-i]
			}
			d, err := login(p)
			if err != nil {
				return fmt.Errorf("ssh through %s: %w", p, err)
			}
			times[p] = append(times[p], d.Seconds())
		}
	}
	for p, v := range times {
		res.SSHMedianS[p] = median(v)
	}
	b.progress("  ssh true: %v", res.SSHMedianS)
	return nil
}

// tunnelHelper is the ProxyCommand mode: stdin/stdout through iaptunnel to
// the target in BENCH_TUNNEL_TARGET (project/zone/instance/port).
func tunnelHelper() int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)
	f := strings.Split(os.Getenv("BENCH_TUNNEL_TARGET"), "/")
	tok, err1 := os.ReadFile(os.Getenv("BENCH_TUNNEL_TOKEN_FILE"))
	ca, err2 := os.ReadFile(os.Getenv("BENCH_TUNNEL_CA"))
	if len(f) != 4 || err1 != nil || err2 != nil {
		fmt.Fprintln(os.Stderr, "bench tunnel helper: bad environment", err1, err2)
		return 1
	}
	port, _ := strconv.Atoi(f[3])
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	conn, err := iaptunnel.Dial(ctx, iaptunnel.Target{Project: f[0], Zone: f[1], Instance: f[2], Port: port}, iaptunnel.Options{
		TokenSource: oauth2.StaticTokenSource(&oauth2.Token{AccessToken: strings.TrimSpace(string(tok))}),
		URL:         os.Getenv("BENCH_TUNNEL_URL"),
		HTTPClient:  &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}})
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench tunnel helper:", err)
		return 1
	}
	if err := iaptunnel.Serve(ctx, conn, os.Stdin, os.Stdout); err != nil && ctx.Err() == nil {
		fmt.Fprintln(os.Stderr, "bench tunnel helper:", err)
		return 1
	}
	return 0
}

// print writes the tunnel section with ratios: iaptunnel against direct
// and gcloud for bulk (targets ≥ 0.5 of direct, ≥ 10× gcloud) and for ssh
// set-up (target ≤ 0.25 of gcloud's time).
func (t *TunnelResult) print(w io.Writer) {
	fmt.Fprintf(w, "\nIAP tunnel through the emulator's relay (wss://, loopback) — bulk %d MiB, median of %d interleaved rounds;\n", t.Bytes>>20, t.Rounds)
	fmt.Fprintf(w, "`ssh vm true` with each as ProxyCommand, median of %d\n", t.SSHN)
	for _, p := range []string{viaDirect, viaOurs, viaGcloud} {
		if v, ok := t.MBps[p]; ok {
			fmt.Fprintf(w, "  %-24s %8.1f MB/s   ssh %6.3f s\n", p, v, t.SSHMedianS[p])
		}
	}
	if d := t.MBps[viaDirect]; d > 0 {
		fmt.Fprintf(w, "  iaptunnel/direct bulk %.2f (target ≥ 0.5)\n", t.MBps[viaOurs]/d)
	}
	if g := t.MBps[viaGcloud]; g > 0 {
		fmt.Fprintf(w, "  iaptunnel/gcloud bulk %.1f× (target ≥ 10×)\n", t.MBps[viaOurs]/g)
	}
	if g := t.SSHMedianS[viaGcloud]; g > 0 {
		fmt.Fprintf(w, "  ssh set-up iaptunnel/gcloud %.2f (target ≤ 0.25), direct/gcloud %.2f\n", t.SSHMedianS[viaOurs]/g, t.SSHMedianS[viaDirect]/g)
	}
	for _, n := range t.Notes {
		fmt.Fprintf(w, "  note: %s\n", n)
	}
}
