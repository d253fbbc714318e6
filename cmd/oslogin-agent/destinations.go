package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"golang.org/x/oauth2"

	"github.com/oslogin-agent/oslogin-agent/destination"
	"github.com/oslogin-agent/oslogin-agent/oslogin"
)

// helperTimeout bounds one run of a helper that ssh waits for.
const helperTimeout = 30 * time.Second

// destFlags are the flags the destination subcommands share.
type destFlags struct {
	project string
	zone    string
}

func (f *destFlags) add(fs *pflag.FlagSet) {
	fs.StringVar(&f.project, "project", "", "project `ID` of names without one (default: from the credentials)")
	fs.StringVar(&f.zone, "zone", "", "`ZONE` of names without one (default: found by searching the project)")
}

// newResolver finds the credentials the way the agent does and returns a
// Compute lookup over them. It keeps nothing between runs: a helper run by
// ssh is short-lived, and tokens are never written to disk. (The agent will
// answer helpers from its own destination.Cache.)
func newResolver(ctx context.Context, project string) (*destination.Resolver, error) {
	ep, id, err := helperIdentity(ctx, project)
	if err != nil {
		return nil, err
	}
	hc := &http.Client{
		Transport: &oauth2.Transport{Source: oauth2.ReuseTokenSource(nil, id.TokenSource), Base: ep.HTTPTransport()},
		Timeout:   helperTimeout,
	}
	return destination.NewResolver(destination.Options{HTTPClient: hc, ComputeURL: ep.Compute, Project: id.Project})
}

// helperIdentity is a helper's own endpoints and credentials, found the way
// the agent finds them, for when no agent answers.
func helperIdentity(ctx context.Context, project string) (oslogin.Endpoints, *oslogin.Identity, error) {
	ep, err := oslogin.ResolveEndpoints(oslogin.EndpointOverrides{}, os.Getenv)
	if err != nil {
		return ep, nil, err
	}
	if ep.LoopbackOnly() {
		os.Setenv(oslogin.MetadataHostEnv, ep.MetadataHost)
	}
	id, err := oslogin.FindIdentity(ctx, oslogin.IdentityOptions{
		Project: project, TokenInfoURL: ep.TokenInfo, HTTPClient: ep.HTTPClient(),
	})
	return ep, id, err
}

// parseSubFlags parses a subcommand's flags; help is printed to stdout.
func parseSubFlags(fs *pflag.FlagSet, args []string, usage string, stdout, stderr io.Writer) (ok bool, code int) {
	fs.SetOutput(io.Discard)
	help := fs.BoolP("help", "h", false, "show this help")
	if err := fs.Parse(args); err != nil && err != pflag.ErrHelp {
		fmt.Fprintf(stderr, "oslogin-agent %s: %v (run 'oslogin-agent %s --help' for usage)\n", fs.Name(), err, fs.Name())
		return false, 2
	}
	if *help {
		fmt.Fprintf(stdout, "%s\nFlags:\n%s", usage, fs.FlagUsages())
		return false, 0
	}
	return true, 0
}

// helperFail reports err on one line for a helper and returns its status.
func helperFail(stderr io.Writer, name string, err error) int {
	fmt.Fprintf(stderr, "oslogin-agent %s: %s\n", name, strings.Join(strings.Fields(err.Error()), " "))
	return 1
}
