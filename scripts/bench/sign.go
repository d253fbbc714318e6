package main

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"
	sshagent "golang.org/x/crypto/ssh/agent"

	"github.com/oslogin-agent/oslogin-agent/signer"
)

// signSample is one measurement: conc clients signing for a while.
type signSample struct {
	Rate   float64       // signatures per second
	P50    time.Duration // latency of one request, client side
	P99    time.Duration
	N      int
	Errors int
	// CPU time per signature of the agent process and of this process
	// (the clients), in microseconds.
	AgentCPUus, ClientCPUus float64
}

// signData is what every request signs: about the size of the data ssh
// signs in a userauth request.
var signData = func() []byte {
	b := make([]byte, 256)
	rand.Read(b)
	return b
}()

// signFlags is what OpenSSH asks for: rsa-sha2-512 for RSA keys.
func signFlags(pub ssh.PublicKey) sshagent.SignatureFlags {
	if pub.Type() == ssh.KeyAlgoRSA {
		return sshagent.SignatureFlagRsaSha512
	}
	return 0
}

// signLoad opens conc connections to the agent at sock (one per client,
// x/crypto's agent client on each), has each sign once and verifies it,
// then has all of them sign back to back for dur.
func signLoad(sock string, pid int, pub ssh.PublicKey, conc int, dur time.Duration) (signSample, error) {
	flags := signFlags(pub)
	clients := make([]sshagent.ExtendedAgent, conc)
	for i := range clients {
		c, err := net.Dial("unix", sock)
		if err != nil {
			return signSample{}, err
		}
		defer c.Close()
		clients[i] = sshagent.NewClient(c)
		sig, err := clients[i].SignWithFlags(pub, signData, flags)
		if err != nil {
			return signSample{}, fmt.Errorf("warm-up signature: %w", err)
		}
		if err := pub.Verify(signData, sig); err != nil {
			return signSample{}, fmt.Errorf("warm-up signature does not verify: %w", err)
		}
	}
	lat := make([][]time.Duration, conc)
	var errs atomic.Int64
	var wg sync.WaitGroup
	start := make(chan struct{})
	var deadline time.Time
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l := make([]time.Duration, 0, 1024)
			<-start
			for time.Now().Before(deadline) {
				t := time.Now()
				_, err := c.SignWithFlags(pub, signData, flags)
				if err != nil {
					errs.Add(1)
					continue
				}
				l = append(l, time.Since(t))
			}
			lat[i] = l
		}()
	}
	agent0, err := procCPU(pid)
	if err != nil {
		return signSample{}, err
	}
	self0 := selfCPU()
	t0 := time.Now()
	deadline = t0.Add(dur)
	close(start)
	wg.Wait()
	elapsed := time.Since(t0)
	agent1, err := procCPU(pid)
	if err != nil {
		return signSample{}, err
	}
	self1 := selfCPU()
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	if len(all) == 0 {
		return signSample{}, fmt.Errorf("no signature in %v (%d errors)", dur, errs.Load())
	}
	slices.Sort(all)
	return signSample{
		Rate:        float64(len(all)) / elapsed.Seconds(),
		P50:         percentile(all, 0.50),
		P99:         percentile(all, 0.99),
		N:           len(all),
		Errors:      int(errs.Load()),
		AgentCPUus:  float64(agent1-agent0) / float64(time.Microsecond) / float64(len(all)),
		ClientCPUus: float64(self1-self0) / float64(time.Microsecond) / float64(len(all)),
	}, nil
}

// percentile of sorted durations, nearest rank.
func percentile(sorted []time.Duration, q float64) time.Duration {
	i := int(q*float64(len(sorted))+0.999999) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// procCPU is the user+system CPU time a process used so far, from
// /proc/PID/stat (clock ticks of 10 ms).
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name may contain spaces; fields count from after ")".
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	return time.Duration(utime+stime) * 10 * time.Millisecond, nil
}

// selfCPU is this process's user+system CPU time.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// inProcessRate is the signing rate of package signer itself with conc
// goroutines: what the machine can do without any socket in between.
func inProcessRate(k *signer.Key, conc int, dur time.Duration) float64 {
	algorithm := ""
	if k.PublicKey().Type() == ssh.KeyAlgoRSA {
		algorithm = ssh.KeyAlgoRSASHA512
	}
	var n atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	deadline := start.Add(dur)
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				if _, err := k.SignWithAlgorithm(nil, signData, algorithm); err == nil {
					n.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	return float64(n.Load()) / time.Since(start).Seconds()
}

// SignRow is the result for one key type, client count and agent.
type SignRow struct {
	KeyType string  `json:"key_type"`
	Clients int     `json:"clients"`
	Agent   string  `json:"agent"` // "oslogin-agent", "ssh-agent" or "in-process"
	Rate    float64 `json:"signatures_per_second"`
	P50ms   float64 `json:"p50_ms,omitempty"`
	P99ms   float64 `json:"p99_ms,omitempty"`
	// AgentCPUus and ClientCPUus are CPU microseconds per signature in the
	// agent process and in the bench's clients (medians over rounds).
	AgentCPUus  float64 `json:"agent_cpu_us_per_signature,omitempty"`
	ClientCPUus float64 `json:"client_cpu_us_per_signature,omitempty"`
	Rounds      int     `json:"rounds"`
	Signs       int     `json:"signatures"`
	Errors      int     `json:"errors"`
	RatesSeen   []int   `json:"rates_per_round"`
}

// MemRow is the memory of one agent holding one key type.
type MemRow struct {
	KeyType   string `json:"key_type"`
	Agent     string `json:"agent"`
	IdleKiB   int64  `json:"idle_rss_kib"`
	LoadedKiB int64  `json:"loaded_rss_kib"` // peak VmRSS sampled during the 64-client runs
	HWMKiB    int64  `json:"vm_hwm_kib"`
	// The anonymous part (heap, stacks) of idle and loaded; the rest is
	// file-backed: the executable's and libraries' pages.
	IdleAnonKiB   int64 `json:"idle_rss_anon_kib"`
	LoadedAnonKiB int64 `json:"loaded_rss_anon_kib"`
}

const (
	nameOsl  = "oslogin-agent"
	nameSSH  = "ssh-agent"
	nameProc = "in-process"
)

// signBench measures one key type: oslogin-agent and ssh-agent alternately
// (ABBA order across rounds), and package signer in process each round.
func (b *bench) signBench(kt signer.KeyType) ([]SignRow, []MemRow, error) {
	dir, err := os.MkdirTemp(b.tmp, "sign")
	if err != nil {
		return nil, nil, err
	}
	e, err := startEmulator(b.emuConfig())
	if err != nil {
		return nil, nil, err
	}
	defer e.Close()
	osl, err := b.startOslAgent(e, filepath.Join(dir, "osl.sock"), os.DevNull, "--key-type", kt.String())
	if err != nil {
		return nil, nil, err
	}
	defer osl.Stop()
	sa, err := b.startSSHAgent(dir, kt)
	if err != nil {
		return nil, nil, err
	}
	defer sa.Stop()
	key, err := signer.Generate(kt)
	if err != nil {
		return nil, nil, err
	}
	defer key.Destroy()

	type target struct {
		name           string
		sock           string
		pid            int
		pub            ssh.PublicKey
		peak, peakAnon int64
		idle, idleAnon int64
	}
	targets := map[string]*target{
		nameOsl: {name: nameOsl, sock: osl.sock, pid: osl.pid},
		nameSSH: {name: nameSSH, sock: sa.sock, pid: sa.pid},
	}
	for _, t := range targets {
		if t.pub, err = firstKey(t.sock); err != nil {
			return nil, nil, err
		}
		if t.pub.Type() != key.PublicKey().Type() {
			return nil, nil, fmt.Errorf("%s holds a %s key, want %s", t.name, t.pub.Type(), key.PublicKey().Type())
		}
		if t.idle, err = rssKiB(t.pid, "VmRSS"); err != nil {
			return nil, nil, err
		}
		if t.idleAnon, err = rssKiB(t.pid, "RssAnon"); err != nil {
			return nil, nil, err
		}
	}

	samples := map[string]map[int][]signSample{nameOsl: {}, nameSSH: {}, nameProc: {}}
	for r := range b.rounds {
		for _, c := range b.clients {
			samples[nameProc][c] = append(samples[nameProc][c], signSample{Rate: inProcessRate(key, c, b.signDur)})
		}
		order := []string{nameOsl, nameSSH}
		if r%2 == 1 {
			order = []string{nameSSH, nameOsl}
		}
		for _, name := range order {
			t := targets[name]
			for _, c := range b.clients {
				var rss *rssSampler
				if c == maxClients(b.clients) {
					rss = sampleRSS(t.pid, 20*time.Millisecond)
				}
				s, err := signLoad(t.sock, t.pid, t.pub, c, b.signDur)
				if rss != nil {
					if p, a := rss.Stop(); p > t.peak {
						t.peak, t.peakAnon = p, a
					}
				}
				if err != nil {
					return nil, nil, fmt.Errorf("%s %s %d clients: %w", name, kt, c, err)
				}
				samples[name][c] = append(samples[name][c], s)
				b.progress("  %-13s %-10s round %d  %2d clients  %8.0f sig/s  p50 %-9v p99 %-9v  CPU/sig agent %5.1f µs client %5.1f µs  errors %d",
					name, kt, r+1, c, s.Rate, s.P50.Round(time.Microsecond), s.P99.Round(time.Microsecond), s.AgentCPUus, s.ClientCPUus, s.Errors)
			}
		}
		b.progress("  %-13s %-10s round %d  in-process sig/s by goroutines%s", nameProc, kt, r+1, lastRates(samples[nameProc], b.clients))
	}

	var rows []SignRow
	for _, name := range []string{nameOsl, nameSSH, nameProc} {
		for _, c := range b.clients {
			rows = append(rows, summarize(kt.String(), name, c, samples[name][c]))
		}
	}
	var mem []MemRow
	for _, name := range []string{nameOsl, nameSSH} {
		t := targets[name]
		hwm, _ := rssKiB(t.pid, "VmHWM")
		mem = append(mem, MemRow{KeyType: kt.String(), Agent: name, IdleKiB: t.idle, LoadedKiB: t.peak, HWMKiB: hwm,
			IdleAnonKiB: t.idleAnon, LoadedAnonKiB: t.peakAnon})
	}
	return rows, mem, nil
}

func maxClients(cs []int) int { return slices.Max(cs) }

// lastRates formats the latest in-process rate per client count.
func lastRates(m map[int][]signSample, clients []int) string {
	var s string
	for _, c := range clients {
		if l := m[c]; len(l) > 0 {
			s += fmt.Sprintf(" %d:%.0f", c, l[len(l)-1].Rate)
		}
	}
	return s
}

// summarize takes the medians over rounds.
func summarize(kt, agent string, clients int, ss []signSample) SignRow {
	row := SignRow{KeyType: kt, Clients: clients, Agent: agent, Rounds: len(ss)}
	var r, p50, p99, acpu, ccpu []float64
	for _, s := range ss {
		r = append(r, s.Rate)
		acpu = append(acpu, s.AgentCPUus)
		ccpu = append(ccpu, s.ClientCPUus)
		p50 = append(p50, ms(s.P50))
		p99 = append(p99, ms(s.P99))
		row.Signs += s.N
		row.Errors += s.Errors
		row.RatesSeen = append(row.RatesSeen, int(s.Rate+0.5))
	}
	row.Rate = median(r)
	if agent != nameProc {
		row.P50ms, row.P99ms = median(p50), median(p99)
		row.AgentCPUus, row.ClientCPUus = median(acpu), median(ccpu)
	}
	return row
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
