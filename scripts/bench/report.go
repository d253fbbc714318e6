package main

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"text/tabwriter"
)

// Report is everything one run measured.
type Report struct {
	Date        string         `json:"date"`
	Command     string         `json:"command"`
	Smoke       bool           `json:"smoke"`
	Machine     Machine        `json:"machine"`
	Rounds      int            `json:"rounds"`
	SignSeconds float64        `json:"seconds_per_signing_measurement"`
	Clients     []int          `json:"clients"`
	Signing     []SignRow      `json:"signing,omitempty"`
	Memory      []MemRow       `json:"memory,omitempty"`
	Startup     []StartRow     `json:"start_to_ready,omitempty"`
	Logins      *LoginResult   `json:"logins,omitempty"`
	Tunnel      *TunnelResult  `json:"tunnel,omitempty"`
	Ansible     *AnsibleResult `json:"ansible,omitempty"`
	APIHour     *APIHour       `json:"api_cost_per_hour,omitempty"`
	Fleet       *FleetResult   `json:"fleet,omitempty"`
	Targets     []Target       `json:"targets"`
}

// Machine describes where the run happened.
type Machine struct {
	CPUs    int    `json:"nproc"`
	CPU     string `json:"cpu"`
	Kernel  string `json:"kernel"`
	OpenSSH string `json:"openssh"`
	Go      string `json:"go"`
}

func machine() Machine {
	m := Machine{CPUs: runtime.NumCPU(), Go: runtime.Version()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if out, err := exec.Command("ssh", "-V").CombinedOutput(); err == nil {
		m.OpenSSH = strings.TrimSpace(string(out))
	}
	return m
}

// Target is one goal of issue 5 and how this run did against it.
type Target struct {
	Name  string `json:"name"`
	Value string `json:"value"`
	Goal  string `json:"goal"`
	Pass  bool   `json:"pass"`
}

func (r *Report) row(kt, agent string, clients int) *SignRow {
	for i := range r.Signing {
		s := &r.Signing[i]
		if s.KeyType == kt && s.Agent == agent && s.Clients == clients {
			return s
		}
	}
	return nil
}

// judge computes the targets from the figures.
func (r *Report) judge() {
	add := func(name, value, goal string, pass bool) {
		r.Targets = append(r.Targets, Target{Name: name, Value: value, Goal: goal, Pass: pass})
	}
	ratio := func(kt string, clients int, goal float64) {
		o, s := r.row(kt, nameOsl, clients), r.row(kt, nameSSH, clients)
		if o == nil || s == nil || s.Rate == 0 {
			return
		}
		v := o.Rate / s.Rate
		add(fmt.Sprintf("%s sig/s vs ssh-agent, %d client(s)", kt, clients),
			fmt.Sprintf("%.2f×", v), fmt.Sprintf("≥ %.1f×", goal), v >= goal)
	}
	ratio("ed25519", 1, 5)
	ratio("ed25519", 8, 8)
	ratio("rsa-3072", 8, 1.3)
	var kts []string
	for _, s := range r.Signing {
		if len(kts) == 0 || kts[len(kts)-1] != s.KeyType {
			kts = append(kts, s.KeyType)
		}
	}
	for _, kt := range kts {
		o, p := r.row(kt, nameOsl, 8), r.row(kt, nameProc, 8)
		if o != nil && p != nil && p.Rate > 0 {
			v := o.Rate / p.Rate
			add(fmt.Sprintf("%s sig/s vs in-process, 8 clients", kt), fmt.Sprintf("%.0f%%", 100*v), "≥ 70%", v >= 0.70)
		}
	}
	for _, kt := range kts {
		o, s := r.row(kt, nameOsl, 64), r.row(kt, nameSSH, 64)
		if o != nil && s != nil && s.P99ms > 0 {
			v := o.P99ms / s.P99ms
			add(fmt.Sprintf("%s p99 vs ssh-agent, 64 clients", kt),
				fmt.Sprintf("%.2f× (%.1f vs %.1f ms)", v, o.P99ms, s.P99ms), "≤ 0.20×", v <= 0.20)
		}
	}
	for _, s := range r.Startup {
		if s.Scenario == startScenarios[1].Name {
			add("start to ready beyond one API round trip (100 ms on the API)",
				fmt.Sprintf("%.1f ms (ready in %.1f ms)", s.OverheadMs, s.ReadyMs), "≤ 30 ms", s.OverheadMs <= 30)
		}
	}
	if l := r.Logins; l != nil {
		add("ssh host true, oslogin-agent / ssh-agent (median)", fmt.Sprintf("%.3f", l.Ratio), "≤ 1.05", l.Ratio <= 1.05)
		add("OS Login calls per connection", fmt.Sprintf("%.2f", l.APICallsPerLogin), "0", l.APICallsPerLogin == 0)
	}
	if a := r.Ansible; a != nil {
		add("OS Login calls during the Ansible runs", fmt.Sprint(a.APICalls), "0", a.APICalls == 0)
	}
	if r.Fleet != nil {
		r.Fleet.judge(add)
	}
	for _, m := range r.Memory {
		if m.Agent != nameOsl {
			continue
		}
		add(fmt.Sprintf("%s RSS idle", m.KeyType), mib(m.IdleKiB), "≤ 16 MiB", m.IdleKiB <= 16*1024)
		add(fmt.Sprintf("%s RSS under %d clients", m.KeyType, maxClients(r.Clients)), mib(m.LoadedKiB), "≤ 32 MiB", m.LoadedKiB <= 32*1024)
	}
}

func mib(kib int64) string { return fmt.Sprintf("%.1f MiB", float64(kib)/1024) }

// print writes the human-readable table.
func (r *Report) print(w io.Writer) {
	m := r.Machine
	fmt.Fprintf(w, "\noslogin-agent vs OpenSSH ssh-agent — %s\n", r.Date)
	fmt.Fprintf(w, "machine: %d CPUs, %s, kernel %s, %s, %s\n", m.CPUs, m.CPU, m.Kernel, m.OpenSSH, m.Go)
	fmt.Fprintf(w, "command: %s\n", r.Command)
	if r.Smoke {
		fmt.Fprintln(w, "SMOKE RUN: tiny samples; the marks below are indicative, not results")
	}

	if len(r.Signing) > 0 {
		fmt.Fprintf(w, "\nSigning through the socket — x/crypto agent client, one connection per client, 256-byte data;\n")
		fmt.Fprintf(w, "medians of %d round(s) of %.1f s per agent, ABBA order; RSA signs rsa-sha2-512\n", r.Rounds, r.SignSeconds)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "\t\toslogin-agent\t\t\t\tssh-agent\t\t\t\t\tin-process\t\t\t")
		fmt.Fprintln(tw, "key\tclients\tsig/s\tp50 ms\tp99 ms\tCPU µs/sig\tsig/s\tp50 ms\tp99 ms\tCPU µs/sig\tratio\tsig/s\tosl/in-proc\terrors\t")
		for _, o := range r.Signing {
			if o.Agent != nameOsl {
				continue
			}
			s, p := r.row(o.KeyType, nameSSH, o.Clients), r.row(o.KeyType, nameProc, o.Clients)
			if s == nil || p == nil {
				continue
			}
			fmt.Fprintf(tw, "%s\t%d\t%.0f\t%.3f\t%.3f\t%.1f\t%.0f\t%.3f\t%.3f\t%.1f\t%.2f×\t%.0f\t%.0f%%\t%d\t\n",
				o.KeyType, o.Clients, o.Rate, o.P50ms, o.P99ms, o.AgentCPUus, s.Rate, s.P50ms, s.P99ms, s.AgentCPUus,
				o.Rate/s.Rate, p.Rate, 100*o.Rate/p.Rate, o.Errors+s.Errors)
		}
		tw.Flush()
		fmt.Fprintln(w, "CPU µs/sig: CPU time of the agent process per signature (/proc/PID/stat, 10 ms ticks)")
	}

	if len(r.Memory) > 0 {
		fmt.Fprintf(w, "\nMemory — VmRSS after start-up (idle), peak VmRSS during the %d-client runs, VmHWM at the end\n", maxClients(r.Clients))
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "key\tagent\tidle\t(anon)\tloaded\t(anon)\tVmHWM\t")
		for _, mr := range r.Memory {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", mr.KeyType, mr.Agent, mib(mr.IdleKiB), mib(mr.IdleAnonKiB),
				mib(mr.LoadedKiB), mib(mr.LoadedAnonKiB), mib(mr.HWMKiB))
		}
		tw.Flush()
		fmt.Fprintln(w, "anon: RssAnon, the heap and stacks; the rest of VmRSS is file-backed (the executable's and libraries' pages)")
	}

	if len(r.Startup) > 0 {
		fmt.Fprintf(w, "\nStart to ready — process start until the shell lines are printed and the socket answers;\n")
		fmt.Fprintf(w, "emulator latency injected per request; requests counted until ready\n")
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "latency\tready ms (median)\tmin\tmax\truns\tAPI calls\tmetadata calls\tround trips on the critical path\t")
		for _, s := range r.Startup {
			rt := "-"
			if s.RoundTrips != 0 {
				rt = fmt.Sprintf("%.2f", s.RoundTrips)
			}
			fmt.Fprintf(tw, "%s\t%.1f\t%.1f\t%.1f\t%d\t%d\t%d\t%s\t\n", s.Scenario, s.ReadyMs, s.MinMs, s.MaxMs, s.Runs, s.APICalls, s.MetadataReqs, rt)
		}
		tw.Flush()
	}

	if l := r.Logins; l != nil {
		fmt.Fprintf(w, "\nReal logins — `ssh host true` against sshd on 127.0.0.1 (AuthorizedKeysCommand asks the emulator),\n")
		fmt.Fprintf(w, "%d per agent, alternating; ssh-agent's key imported into the same OS Login account\n", l.N)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "\toslogin-agent\tssh-agent\tratio\t")
		fmt.Fprintf(tw, "median ms\t%.1f\t%.1f\t%.3f\t\n", l.OslMedianMs, l.SSHMedianMs, l.Ratio)
		fmt.Fprintf(tw, "mean ms\t%.1f\t%.1f\t%.3f\t\n", l.OslMeanMs, l.SSHMeanMs, l.RatioMean)
		tw.Flush()
		fmt.Fprintf(w, "failures: %d; emulator calls during the logins: %s\n", l.Failures, l.APICalls)
	}
	if t := r.Tunnel; t != nil {
		t.print(w)
	}
	if a := r.Ansible; a != nil {
		fmt.Fprintf(w, "\nAnsible — playbook (7 tasks) over %d sshd hosts, forks 10, pipelining, fresh ControlPersist masters per run\n", a.Hosts)
		fmt.Fprintf(w, "  oslogin-agent median %.2f s %v, ssh-agent median %.2f s %v, ratio %.3f; OS Login calls %d\n",
			a.OslMedianS, fmtSecs(a.OslRunsS), a.SSHMedianS, fmtSecs(a.SSHRunsS), a.Ratio, a.APICalls)
	}
	if h := r.APIHour; h != nil {
		fmt.Fprintf(w, "\nAPI cost of a running agent — OS Login calls per hour between 3600/(TTL/2) + 3600/rotate and 3600/(TTL/2) + 2·3600/rotate\n")
		fmt.Fprintf(w, "  measured with --ttl %.0fs --rotate %.0fs for %.0f s: %d calls %v → %.0f/hour (formula: %.0f–%.0f/hour)\n",
			h.TTLSeconds, h.RotateSeconds, h.ElapsedSeconds, h.APICalls, h.Calls, h.MeasuredPerHour, h.FormulaLow, h.FormulaHigh)
		fmt.Fprintf(w, "  defaults (--ttl 10m --rotate 1h): %.0f–%.0f calls/hour (11–12 renewals, 1 import, 1 delete); metadata token fetches during the run: %d\n",
			h.DefaultsLow, h.DefaultsHigh, h.TokenFetches)
	}

	if f := r.Fleet; f != nil {
		f.print(w)
	}

	if len(r.Targets) > 0 {
		fmt.Fprintf(w, "\nTargets (issues 5, 9, 10)\n")
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		for _, t := range r.Targets {
			mark := "MISS"
			if t.Pass {
				mark = "PASS"
			}
			if r.Smoke {
				mark = "(" + strings.ToLower(mark) + ", smoke)"
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", t.Name, t.Value, t.Goal, mark)
		}
		tw.Flush()
	}
}

func fmtSecs(v []float64) string {
	parts := make([]string, len(v))
	for i, x := range v {
		parts[i] = fmt.Sprintf("%.2f", x)
	}
	return "[" + strings.Join(parts, " ") + "]"
}
