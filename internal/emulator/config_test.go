package emulator_test

import (
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/oslogin-agent/oslogin-agent/internal/emulator"
)

func TestDefaultConfig(t *testing.T) {
	c := emulator.DefaultConfig()
	if c.ProjectID != "emulator-project" || len(c.Accounts) != 1 || c.Accounts[0].Email != saEmail ||
		!c.Accounts[0].ServiceAccount || !c.Accounts[0].Login || c.Accounts[0].AdminLogin ||
		c.ProfileLimit != 32768 || c.PurgeDelay != 5*time.Minute || c.TokenLifetime != time.Hour ||
		!regexp.MustCompile(`^[1-9]\d{11}$`).MatchString(c.ProjectNumber) || !regexp.MustCompile(`^[1-9]\d{18}$`).MatchString(c.InstanceID) {
		t.Errorf("default config %+v", c)
	}
	a := c.Accounts[0]
	if !regexp.MustCompile(`^1\d{20}$`).MatchString(a.UniqueID) || a.UID < 1000 || a.UID >= 1<<32 {
		t.Errorf("derived account %+v", a)
	}
	if again := emulator.DefaultConfig(); !reflect.DeepEqual(again.Accounts[0], a) || again.ProjectNumber != c.ProjectNumber {
		t.Error("derivation is not stable")
	}
	emu, err := emulator.New(emulator.Options{}) // Config{} serves the same
	if err != nil || !reflect.DeepEqual(emu.Accounts()[0], a) {
		t.Errorf("zero config: %v, %+v", err, emu.Accounts())
	}
}

func TestParseConfig(t *testing.T) {
	path := filepath.Join(t.TempDir(), "emulator.json")
	err := os.WriteFile(path, []byte(`{
		"projectId": "demo", "projectNumber": "123456789012", "zone": "europe-west1-b",
		"instanceName": "box", "instanceId": "42", "instanceScopes": ["`+emulator.ScopeCompute+`"],
		"purgeDelay": "1m", "profileLimit": 1000, "tokenLifetime": "15m", "writeQuotaPerMinute": 60,
		"osLoginDisabled": true,
		"accounts": [
			{"email": "ci@demo.iam.gserviceaccount.com", "login": true},
			{"email": "ops@example.com", "username": "ops", "adminLogin": true, "uid": 5000, "uniqueId": "100000000000000000042"}
		]}`), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	c, err := emulator.LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	if c.ProjectID != "demo" || c.Zone != "europe-west1-b" || c.PurgeDelay != time.Minute || c.ProfileLimit != 1000 ||
		c.TokenLifetime != 15*time.Minute || c.WriteQuotaPerMinute != 60 || !c.OSLoginDisabled || len(c.Accounts) != 2 ||
		c.Accounts[1].Username != "ops" || c.Accounts[1].UID != 5000 || c.InstanceScopes[0] != emulator.ScopeCompute {
		t.Errorf("parsed %+v", c)
	}
	emu, err := emulator.New(emulator.Options{Config: c})
	if err != nil {
		t.Fatal(err)
	}
	as := emu.Accounts()
	if !as[0].ServiceAccount || as[1].ServiceAccount || !as[1].Login || as[1].UniqueID != "100000000000000000042" {
		t.Errorf("normalised %+v", as)
	}

	for _, bad := range []string{`{"projectName": "typo"}`, `{"purgeDelay": "soon"}`, `{"accounts": [{"email": 1}]}`, `not json`} {
		if _, err := emulator.ParseConfig([]byte(bad)); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
	if _, err := emulator.LoadConfig(filepath.Join(t.TempDir(), "missing.json")); err == nil {
		t.Error("missing file accepted")
	}
}

func TestConfigValidation(t *testing.T) {
	tests := []struct {
		name     string
		accounts []emulator.Account
		want     string
	}{
		{"not an e-mail", []emulator.Account{{Email: "nobody"}}, "not an e-mail"},
		{"slash", []emulator.Account{{Email: "a/b@example.com"}}, "not an e-mail"},
		{"duplicate", []emulator.Account{{Email: "a@example.com"}, {Email: "A@example.com"}}, "duplicate"},
		{"bad username", []emulator.Account{{Email: "a@example.com", Username: "-root"}}, "username"},
		{"username clash", []emulator.Account{{Email: "a@example.com", Username: "x"}, {Email: "b@example.com", Username: "x"}}, "already used"},
		{"low uid", []emulator.Account{{Email: "a@example.com", UID: 999}}, "uid"},
		{"uid clash", []emulator.Account{{Email: "a@example.com", UID: 2000}, {Email: "b@example.com", UID: 2000}}, "already used"},
		{"unique id clash", []emulator.Account{{Email: "a@example.com", UniqueID: "1"}, {Email: "b@example.com", UniqueID: "1"}}, "already used"},
		{"non-numeric id", []emulator.Account{{Email: "a@example.com", UniqueID: "abc"}}, "not numeric"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := emulator.New(emulator.Options{Config: emulator.Config{Accounts: tt.accounts}})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want %q", err, tt.want)
			}
		})
	}
}
