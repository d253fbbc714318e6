package main

import "io"

// Subcommands are reserved first words. They are recognised only as the
// very first argument, before any flag, so they never collide with command
// mode: `oslogin-agent [flags] -- COMMAND` starts with a flag or "--", and a
// program that happens to be called known-hosts still runs as
// `oslogin-agent -- known-hosts`.
var subcommands = map[string]func(args []string, stdout, stderr io.Writer) int{
	"known-hosts": runKnownHosts,
	"ssh-config":  runSSHConfig,
	"proxy":       runProxy,
	"tunnel":      runTunnel,
}

// runSubcommand runs args[0] if it is a reserved word.
func runSubcommand(args []string, stdout, stderr io.Writer) (int, bool) {
	if len(args) == 0 {
		return 0, false
	}
	sub, ok := subcommands[args[0]]
	if !ok {
		return 0, false
	}
	return sub(args[1:], stdout, stderr), true
}
