package emulator_test

import (
	"encoding/json"
	"fmt"
	"net/url"
	"strconv"
	"testing"
	"time"

	"github.com/oslogin-agent/oslogin-agent/internal/emulator"
	"github.com/oslogin-agent/oslogin-agent/internal/emulator/emulatortest"
)

// guestUsers mirrors the JSON the guest parses (contract 7.4).
type guestUsers struct {
	LoginProfiles []struct {
		Name          string `json:"name"`
		PosixAccounts []struct {
			Primary             bool   `json:"primary"`
			Username            string `json:"username"`
			UID                 string `json:"uid"`
			GID                 string `json:"gid"`
			HomeDirectory       string `json:"homeDirectory"`
			AccountID           string `json:"accountId"`
			OperatingSystemType string `json:"operatingSystemType"`
		} `json:"posixAccounts"`
		SSHPublicKeys map[string]struct {
			Key                string `json:"key"`
			ExpirationTimeUsec string `json:"expirationTimeUsec"`
			Fingerprint        string `json:"fingerprint"`
		} `json:"sshPublicKeys"`
	} `json:"loginProfiles"`
	NextPageToken *string `json:"nextPageToken"`
}

func guestGet(t testing.TB, srv *emulatortest.Server, query string) (int, guestUsers, string) {
	t.Helper()
	code, _, body := mdGet(t, srv, "oslogin/"+query)
	var g guestUsers
	if code == 200 {
		if err := json.Unmarshal([]byte(body), &g); err != nil {
			t.Fatalf("%s: %v", body, err)
		}
	}
	return code, g, body
}

func TestGuestUserLookup(t *testing.T) {
	clock := &fixedClock{t: time.Date(2031, 5, 6, 7, 8, 9, 0, time.UTC)}
	srv := emulatortest.StartWithOptions(t, emulator.Options{Config: testConfig(), Clock: clock})
	emu := srv.Emulator
	now := emu.Now()
	sa := account(t, emu, saEmail)
	// A POSIX account in another project exists first; the VM's must come first anyway.
	if _, err := emu.ImportKey(saEmail, "other-project", sshKey(t, 50, "forever\n"), time.Time{}); err != nil {
		t.Fatal(err)
	}
	future, past := sshKey(t, 51, "future"), sshKey(t, 52, "past")
	if _, err := emu.ImportKey(saEmail, project, future, now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, err := emu.ImportKey(saEmail, project, past, now.Add(-time.Second)); err != nil {
		t.Fatal(err)
	}

	username := "sa_" + sa.UniqueID
	for _, q := range []string{"users?username=" + username, "users?uid=" + strconv.FormatInt(sa.UID, 10)} {
		t.Run(q, func(t *testing.T) {
			code, g, body := guestGet(t, srv, q)
			if code != 200 || len(g.LoginProfiles) != 1 || g.NextPageToken != nil {
				t.Fatalf("%d %s", code, body)
			}
			p := g.LoginProfiles[0]
			if p.Name != sa.UniqueID || len(p.PosixAccounts) != 2 {
				t.Fatalf("profile %s", body)
			}
			pa := p.PosixAccounts[0]
			uid := strconv.FormatInt(sa.UID, 10)
			if pa.AccountID != project || pa.Username != username || pa.UID != uid || pa.GID != uid ||
				pa.HomeDirectory != "/home/"+username || pa.OperatingSystemType != "LINUX" || !pa.Primary {
				t.Errorf("posixAccounts[0] %+v", pa)
			}
			if len(p.SSHPublicKeys) != 2 {
				t.Errorf("keys %s, want the unexpired two", body)
			}
			if k := p.SSHPublicKeys[fingerprint(future)]; k.Key != future || k.ExpirationTimeUsec != strconv.FormatInt(now.Add(time.Hour).UnixMicro(), 10) {
				t.Errorf("future key %+v", k)
			}
			if _, ok := p.SSHPublicKeys[fingerprint(past)]; ok {
				t.Error("expired key served to the VM")
			}
		})
	}
	// The expired key is still in the API's profile until the purge delay passes.
	if n := len(emu.Keys(saEmail)); n != 3 {
		t.Errorf("%d stored keys, want 3 before purge", n)
	}

	for _, tt := range []struct {
		query string
		code  int
	}{
		{"users?username=nobody", 404},
		{"users?username=first_last_tag_example_com", 404}, // no POSIX account yet
		{"users?uid=12", 404},
		{"users?uid=abc", 400},
		{"users", 400},
		{"users?pagesize=0", 400},
		{"users?pagesize=2&pagetoken=x", 400},
		{"nonexistent?pagesize=10", 404}, // an oslogin/ path the emulator does not serve
	} {
		if code, _, body := guestGet(t, srv, tt.query); code != tt.code {
			t.Errorf("%s: %d %s, want %d", tt.query, code, body, tt.code)
		}
	}
}

func TestGuestPagination(t *testing.T) {
	cfg := emulator.Config{}
	for i := range 5 {
		cfg.Accounts = append(cfg.Accounts, emulator.Account{Email: fmt.Sprintf("user%d@example.com", i)})
	}
	cfg.Accounts = append(cfg.Accounts, emulator.Account{Email: "unprovisioned@example.com"})
	srv := emulatortest.Start(t, cfg)

	// Nothing provisioned: the first answer is already the terminator.
	if code, g, body := guestGet(t, srv, "users?pagesize=2"); code != 200 || body != `{"nextPageToken":"0"}` || len(g.LoginProfiles) != 0 {
		t.Errorf("empty listing: %d %s", code, body)
	}
	for i := range 5 {
		if _, err := srv.Emulator.ImportKey(fmt.Sprintf("user%d@example.com", i), "", sshKey(t, 60+i, ""), time.Time{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, size := range []int{1, 2, 5, 2048} {
		t.Run(strconv.Itoa(size), func(t *testing.T) {
			seen := map[string]bool{}
			token := ""
			for pages := 0; ; pages++ {
				if pages > 10 {
					t.Fatal("pagination does not end")
				}
				q := "users?pagesize=" + strconv.Itoa(size)
				if token != "" {
					q += "&pagetoken=" + url.QueryEscape(token)
				}
				code, g, body := guestGet(t, srv, q)
				if code != 200 || g.NextPageToken == nil {
					t.Fatalf("%s: %d %s", q, code, body)
				}
				if *g.NextPageToken == "0" {
					if body != `{"nextPageToken":"0"}` {
						t.Errorf("final page %s carries more than the terminator", body)
					}
					break
				}
				if len(g.LoginProfiles) == 0 || len(g.LoginProfiles) > size {
					t.Fatalf("page of %d profiles for pagesize %d", len(g.LoginProfiles), size)
				}
				for _, p := range g.LoginProfiles {
					seen[p.PosixAccounts[0].Username] = true
				}
				token = *g.NextPageToken
			}
			if len(seen) != 5 || seen["unprovisioned_example_com"] {
				t.Errorf("listed %v", seen)
			}
		})
	}
}

func TestGuestAuthorize(t *testing.T) {
	srv := emulatortest.Start(t, testConfig())
	sa := account(t, srv.Emulator, saEmail)
	user := account(t, srv.Emulator, userEmail)
	tests := []struct {
		email, policy string
		code          int
		success       bool
	}{
		{sa.UniqueID, "login", 200, true},
		{sa.UniqueID, "adminLogin", 200, false},
		{saEmail, "login", 200, true},
		{user.UniqueID, "login", 200, true}, // adminLogin implies login
		{user.UniqueID, "adminLogin", 200, true},
		{"denied@example.com", "login", 200, false},
		{"ghost@example.com", "login", 404, false},
		{sa.UniqueID, "root", 400, false},
		{"", "login", 400, false},
	}
	for _, tt := range tests {
		t.Run(tt.email+"/"+tt.policy, func(t *testing.T) {
			code, _, body := mdGet(t, srv, "oslogin/authorize?email="+url.QueryEscape(tt.email)+"&policy="+tt.policy)
			if code != tt.code {
				t.Fatalf("%d %s", code, body)
			}
			if code == 200 && body != fmt.Sprintf(`{"success":%t}`, tt.success) {
				t.Errorf("body %s, want success %t", body, tt.success)
			}
		})
	}
	// Grants change at run time, like IAM bindings.
	if err := srv.Emulator.SetGrant(saEmail, false, false); err != nil {
		t.Fatal(err)
	}
	if _, _, body := mdGet(t, srv, "oslogin/authorize?email="+sa.UniqueID+"&policy=login"); body != `{"success":false}` {
		t.Errorf("after revoking: %s", body)
	}
	if err := srv.Emulator.SetGrant("ghost@example.com", true, true); err == nil {
		t.Error("granted to an unknown account")
	}
}

func TestGuestDisabled(t *testing.T) {
	cfg := testConfig()
	cfg.OSLoginDisabled = true
	srv := emulatortest.Start(t, cfg)
	for _, q := range []string{"oslogin/users?pagesize=10", "oslogin/authorize?email=x&policy=login", "project/attributes/enable-oslogin"} {
		if code, _, _ := mdGet(t, srv, q); code != 404 {
			t.Errorf("%s: %d, want 404", q, code)
		}
	}
}
