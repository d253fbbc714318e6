package version

import (
	"runtime/debug"
	"testing"
)

func TestFromBuildInfo(t *testing.T) {
	tests := []struct {
		name string
		info debug.BuildInfo
		want string
	}{
		{"go install at a tag", debug.BuildInfo{Main: debug.Module{Version: "v1.2.3"}}, "v1.2.3"},
		{"checkout, pseudo-version", debug.BuildInfo{Main: debug.Module{Version: "v0.0.0-20261104224025-d1e00e9f33ab+dirty"}},
			"v0.0.0-20261104224025-d1e00e9f33ab+dirty"},
		{"no module version, commit known", debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "d1e00e9f33ab0123456789abcdef"}, {Key: "vcs.modified", Value: "true"}}},
			"(devel) d1e00e9f33ab+dirty"},
		{"nothing stamped", debug.BuildInfo{Main: debug.Module{Version: "(devel)"}}, "(devel)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := fromBuildInfo(&tc.info); got != tc.want {
				t.Errorf("version %q, want %q", got, tc.want)
			}
		})
	}
}
