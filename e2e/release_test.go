package e2e

import (
	"archive/zip"
	"debug/elf"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

const modulePath = "github.com/oslogin-agent/oslogin-agent"

// TestReleaseBuild installs both programs the way README tells users to,
// `CGO_ENABLED=0 go install -trimpath -ldflags='-s -w' …@VERSION`, from a
// local module proxy that serves this working tree as a made-up version
// (dependencies come from the module cache; nothing is downloaded). The
// binaries must be static, stripped, and say that version in --version.
func TestReleaseBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("compiles everything once more with release flags; skipped with -short")
	}
	const version = "v0.9.9-e2e"
	dir := t.TempDir()
	goEnv := func(key string) string {
		out, err := exec.Command("go", "env", key).Output()
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(out))
	}
	realCache := goEnv("GOMODCACHE")
	proxy := filepath.Join(dir, "proxy")
	writeModule(t, proxy, version)

	modCache := filepath.Join(dir, "modcache")
	env := append(os.Environ(),
		"GOPROXY=file://"+proxy+",file://"+filepath.Join(realCache, "cache", "download"),
		"GOSUMDB=off", // go.sum still checks every dependency
		"GOFLAGS=", "GOTOOLCHAIN=local", "GOWORK=off",
		"GOMODCACHE="+modCache, "GOBIN="+filepath.Join(dir, "bin"), "CGO_ENABLED=0")
	t.Cleanup(func() { // the module cache is read-only; let go remove it
		clean := exec.Command("go", "clean", "-modcache")
		clean.Env = env
		clean.Run()
	})
	install := exec.Command("go", "install", "-trimpath", "-ldflags=-s -w",
		modulePath+"/cmd/oslogin-agent@"+version, modulePath+"/cmd/oslogin-emulator@"+version)
	install.Env = env
	install.Dir = dir // outside the module: go install pkg@version ignores it anyway
	mustRun(t, install)

	for _, prog := range []string{"oslogin-agent", "oslogin-emulator"} {
		bin := filepath.Join(dir, "bin", prog)
		out := strings.TrimSpace(mustRun(t, exec.Command(bin, "--version")))
		if f := strings.Fields(out); len(f) != 3 || f[0] != prog || f[1] != version || !strings.HasPrefix(f[2], "go1.") {
			t.Errorf("%s --version: %q; want %q followed by the Go release", prog, out, prog+" "+version)
		}
		f, err := elf.Open(bin)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				t.Errorf("%s is dynamically linked (it names an interpreter)", prog)
			}
		}
		for _, name := range []string{".debug_info", ".symtab"} {
			if f.Section(name) != nil {
				t.Errorf("%s keeps %s; -s -w should strip it", prog, name)
			}
		}
		f.Close()
		if st, err := os.Stat(bin); err == nil {
			t.Logf("%s: %s, %.1f MB, static, stripped", prog, out, float64(st.Size())/1e6)
		}
	}
}

// writeModule lays out this working tree as version of the module in a
// GOPROXY directory: list, .info, .mod and .zip. The zip is what
// proxy.golang.org would serve, so go's checks of it (file names that
// differ only in case, for one) are the ones `go install …@latest` meets.
func writeModule(t *testing.T, proxy, version string) {
	t.Helper()
	at := filepath.Join(proxy, modulePath, "@v")
	if err := os.MkdirAll(at, 0o755); err != nil {
		t.Fatal(err)
	}
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	gomod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{
		version + ".info": []byte(`{"Version":"` + version + `","Time":"2026-01-01T00:00:00Z"}`),
		version + ".mod":  gomod,
		"list":            []byte(version + "\n"),
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(at, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	zf, err := os.Create(filepath.Join(at, version+".zip"))
	if err != nil {
		t.Fatal(err)
	}
	defer zf.Close()
	zw := zip.NewWriter(zf)
	prefix := modulePath + "@" + version + "/"
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		if d.IsDir() {
			if strings.HasPrefix(d.Name(), ".") && rel != "." {
				return filepath.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() || strings.HasPrefix(d.Name(), ".") {
			return nil
		}
		w, err := zw.Create(prefix + filepath.ToSlash(rel))
		if err != nil {
			return err
		}
		r, err := os.Open(path)
		if err != nil {
			return err
		}
		defer r.Close()
		_, err = io.Copy(w, r)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
}
