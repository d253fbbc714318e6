// Package version says which build of the programs is running, from what
// the Go toolchain stamped into the binary: the module version for
// `go install …@vX.Y.Z` (and @latest), or, for a build from a checkout,
// the version Go derives from the VCS (a tag, or a pseudo-version with
// the commit and "+dirty" for uncommitted changes).
package version

import (
	"runtime/debug"
	"strings"
)

// String is the version of the running binary, e.g. "v0.3.0",
// "v0.0.0-20261104224025-d1e00e9f33ab+dirty", or "(devel)" for a build
// without module or VCS information (as `go build -buildvcs=false` gives).
func String() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "(devel)"
	}
	return fromBuildInfo(info)
}

func fromBuildInfo(info *debug.BuildInfo) string {
	if v := info.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	// Older toolchains, or a VCS without tags Go recognises: the commit.
	var rev, modified string
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			modified = s.Value
		}
	}
	if rev == "" {
		return "(devel)"
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if modified == "true" {
		rev += "+dirty"
	}
	return "(devel) " + rev
}

// Line is what --version prints: the program, its version and the Go
// release that built it.
func Line(program string) string {
	goVersion := "unknown Go"
	if info, ok := debug.ReadBuildInfo(); ok {
		goVersion = info.GoVersion
	}
	return strings.Join([]string{program, String(), goVersion}, " ")
}
