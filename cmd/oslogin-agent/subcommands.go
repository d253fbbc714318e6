package main

import "io"

// Subcommands are reserved first words. They are recognised only as the
// very first argument, before any flag, so they never collide with command
// mode: `oslogin-agent [flags] -- COMMAND` starts with a flag or "--", and a
// program that happens to be called known-hosts still runs as
// `oslogin-agent -- known-hosts`.
func subcommand(name string) func(args []string, stdout, stderr io.Writer) int {
	switch name {
	case "known-hosts":
		return runKnownHosts
	case "ssh-config":
		return runSSHConfig
	case "proxy":
		return runProxy
	case "tunnel":
		return runTunnel
	}
	return nil
}

// runSubcommand runs args[0] if it is a reserved word.
func runSubcommand(args []string, stdout, stderr io.Writer) (int, bool) {
	if len(args) == 0 {
		return 0, false
	}
	sub := subcommand(args[0])
	if sub == nil {
		return 0, false
	}
	return sub(args[1:], stdout, stderr), true
}
