package main

import (
	"fmt"
	"io"
)

// Subcommands are reserved first words. They are recognised only as the
// very first argument, before any flag, so they never collide with command
// mode: `oslogin-agent [flags] -- COMMAND` starts with a flag or "--", and a
// program that happens to be called known-hosts still runs as
// `oslogin-agent -- known-hosts`.
var subcommands = map[string]func(args []string, stdout, stderr io.Writer) int{
	"known-hosts": runKnownHosts,
	"ssh-config":  runSSHConfig,
	"proxy":       notYet("proxy"),
	"tunnel":      notYet("tunnel"),
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

// notYet reserves a word for a subcommand this build does not have, so its
// meaning does not change under scripts when it arrives.
func notYet(name string) func([]string, io.Writer, io.Writer) int {
	return func(_ []string, _, stderr io.Writer) int {
		fmt.Fprintf(stderr, "oslogin-agent %s: not available in this build; to run a program called %s with the agent, use oslogin-agent -- %s\n", name, name, name)
		return 2
	}
}
