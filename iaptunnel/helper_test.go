package iaptunnel_test

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/oauth2"

	"github.com/oslogin-agent/oslogin-agent/iaptunnel"
)

// helperEnv switches the test binary into a tiny ProxyCommand: it tunnels
// stdin/stdout to instance vm1 through the relay named by the other
// variables. The real helper is a later part of the project; this one only
// lets real ssh run over the package.
const helperEnv = "IAPTUNNEL_TEST_HELPER"

func helperMain() int {
	// ssh SIGHUPs its proxy on exit; EPIPE must be an error, not death.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)
	port, _ := strconv.Atoi(os.Getenv("IAPTUNNEL_TEST_PORT"))
	tok := oauth2.StaticTokenSource(&oauth2.Token{AccessToken: os.Getenv("IAPTUNNEL_TEST_TOKEN")})
	conn, err := iaptunnel.Dial(ctx, target("vm1", port), iaptunnel.Options{TokenSource: tok,
		URL: os.Getenv("IAPTUNNEL_TEST_URL"), ConnectTimeout: 10 * time.Second})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := iaptunnel.Serve(ctx, conn, os.Stdin, os.Stdout); err != nil && ctx.Err() == nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}
