package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestCshLinesUnderTcsh is issue 12 item 10: -c output broke under tcsh
// on {}, !, newline and tab. Every value must come back byte for byte
// from a real tcsh.
func TestCshLinesUnderTcsh(t *testing.T) {
	tcsh, err := exec.LookPath("tcsh")
	if err != nil {
		t.Skip("tcsh is not installed")
	}
	for _, v := range []string{
		"/tmp/plain/agent.sock", "/tmp/a b/agent.sock", "/tmp/{}/x", "/tmp/a{b,c}d", "/tmp/bang!1/x", "/tmp/!!",
		"/tmp/new\nline", "/tmp/tab\there", "/tmp/quote'd", `/tmp/dq"x`, "/tmp/$HOME/x", "/tmp/back\\slash", "/tmp/~user",
		"/tmp/star*?[x]", "/tmp/semi;colon", "/tmp/`cmd`", "/tmp/^caret",
	} {
		lines := shellLines(&config{cshSyntax: true}, v, 1234, "sa_1")
		cmd := exec.Command(tcsh, "-f", "-c", lines+"printenv SSH_AUTH_SOCK")
		out, err := cmd.CombinedOutput()
		if got := strings.TrimSuffix(string(out), "\n"); err != nil || !strings.HasSuffix(got, "\n"+v) && got != "Agent pid 1234\n"+v {
			t.Errorf("%q through tcsh: %v\n%s\nscript:\n%s", v, err, out, lines)
		}
	}
}
