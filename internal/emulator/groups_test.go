package emulator_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/oslogin-agent/oslogin-agent/internal/emulator"
	"github.com/oslogin-agent/oslogin-agent/internal/emulator/emulatortest"
)

// The guest's C code cannot run here (it only talks to 169.254.169.254), so
// these tests hold the answers to the rules its parsers apply, function by
// function, in GoogleCloudPlatform/guest-oslogin src/oslogin_utils.cc.

// groupsConfig: the attached service account and first.last+tag (both
// provisioned by the tests), denied@ (never provisioned, so absent from the
// VM) and solo@ (provisioned, in no group).
func groupsConfig() emulator.Config {
	c := testConfig()
	c.Accounts = append(c.Accounts, emulator.Account{Email: "solo@example.com"})
	c.Groups = []emulator.Group{
		{Name: "devs", GID: 5001, Members: []string{saEmail, userEmail, "denied@example.com"}},
		{Name: "ops", GID: 5002, Members: []string{userEmail}},
		{Name: "empty", GID: 5003},
	}
	return c
}

func provision(t testing.TB, emu *emulator.Emulator, emails ...string) {
	t.Helper()
	for i, e := range emails {
		if _, err := emu.ImportKey(e, "", sshKey(t, 200+i, ""), time.Time{}); err != nil {
			t.Fatal(err)
		}
	}
}

func TestGuestGroupQueries(t *testing.T) {
	srv := emulatortest.Start(t, groupsConfig())
	provision(t, srv.Emulator, saEmail, userEmail, "solo@example.com")
	sa := account(t, srv.Emulator, saEmail)
	const (
		devs  = `{"name":"devs","gid":"5001"}`
		ops   = `{"name":"ops","gid":"5002"}`
		empty = `{"name":"empty","gid":"5003"}`
	)
	tests := []struct {
		query string
		code  int
		body  string // checked when code is 200
	}{
		// GetGroupByName / GetGroupByGID: exactly one group in posixGroups.
		{"groups?groupname=devs", 200, `{"posixGroups":[` + devs + `]}`},
		{"groups?groupname=" + url.QueryEscape("ops"), 200, `{"posixGroups":[` + ops + `]}`},
		{"groups?gid=5002", 200, `{"posixGroups":[` + ops + `]}`},
		{"groups?groupname=nope", 404, ""},
		{"groups?groupname=DEVS", 404, ""}, // names are case-sensitive on Linux
		{"groups?gid=4242", 404, ""},
		{"groups?gid=abc", 400, ""},
		{"groups?groupname=", 400, ""},
		{"groups?groupname=devs&gid=5001", 400, ""},

		// GetGroupsForUser: email is the profile name (the numeric id) or an
		// e-mail, sent unencoded; every page has posixGroups, even [].
		{"groups?email=" + sa.UniqueID, 200, `{"posixGroups":[` + devs + `],"nextPageToken":"0"}`},
		{"groups?email=first.last+tag@example.com", 200, `{"posixGroups":[` + devs + `,` + ops + `],"nextPageToken":"0"}`},
		{"groups?email=" + url.QueryEscape(userEmail), 200, `{"posixGroups":[` + devs + `,` + ops + `],"nextPageToken":"0"}`},
		{"groups?email=solo@example.com", 200, `{"posixGroups":[],"nextPageToken":"0"}`},
		{"groups?email=denied@example.com", 404, ""}, // no POSIX account: not on the VM
		{"groups?email=ghost@example.com", 404, ""},
		{"groups?email=", 400, ""},
		{"groups?email=" + sa.UniqueID + "&pagetoken=-3", 400, ""},
		{"groups?email=" + sa.UniqueID + "&pagesize=x", 400, ""},

		// NssGetgrentHelper: the listing.
		{"groups?pagesize=499", 200, `{"posixGroups":[` + devs + `,` + ops + `,` + empty + `],"nextPageToken":"0"}`},
		{"groups?pagesize=499&pagetoken=3", 200, `{"nextPageToken":"0"}`},
		{"groups?pagesize=0", 400, ""},
		{"groups?pagesize=-1", 400, ""},
		{"groups?pagesize=2&pagetoken=x", 400, ""},
		{"groups", 400, ""},

		// GetUsersForGroup: members that exist on the VM, by username.
		{"users?groupname=devs", 200, `{"usernames":["sa_` + sa.UniqueID + `","first_last_tag_example_com"],"nextPageToken":"0"}`},
		{"users?groupname=empty", 200, `{"nextPageToken":"0"}`},
		{"users?groupname=nope", 404, ""},
		{"users?groupname=", 400, ""},
		{"users?groupname=devs&pagesize=0", 400, ""},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			code, h, body := mdGet(t, srv, "oslogin/"+tt.query)
			if code != tt.code {
				t.Fatalf("%d %s, want %d", code, body, tt.code)
			}
			if code == 200 && (body != tt.body || h.Get("Content-Type") != "application/json") {
				t.Errorf("%s %s\nwant %s", h.Get("Content-Type"), body, tt.body)
			}
		})
	}
}

// guestPages follows nextPageToken from query until "0" as the guest's
// loops do, asserting on every page what all of them need: a 200 with a
// string nextPageToken (ParseJsonToKey, LoadJsonGroupsToCache).
func guestPages(t *testing.T, srv *emulatortest.Server, query string) []map[string]json.RawMessage {
	t.Helper()
	var pages []map[string]json.RawMessage
	token := ""
	for {
		if len(pages) > 20 {
			t.Fatalf("%s: pagination does not end", query)
		}
		q := query
		if token != "" {
			q += "&pagetoken=" + token // the guest appends the token as received
		}
		code, _, body := mdGet(t, srv, "oslogin/"+q)
		var page map[string]json.RawMessage
		if code != 200 || json.Unmarshal([]byte(body), &page) != nil {
			t.Fatalf("%s: %d %s", q, code, body)
		}
		if err := json.Unmarshal(page["nextPageToken"], &token); err != nil {
			t.Fatalf("%s: nextPageToken in %s: %v", q, body, err)
		}
		pages = append(pages, page)
		if token == "0" {
			return pages
		}
	}
}

// groupNames checks posixGroups as ParseJsonToGroups does (an array; each
// element with a non-empty name and a gid that is a non-zero uint32, here
// always a string) and returns the names.
func groupNames(t *testing.T, raw json.RawMessage) []string {
	t.Helper()
	var gs []struct {
		Name string           `json:"name"`
		GID  *json.RawMessage `json:"gid"`
	}
	if err := json.Unmarshal(raw, &gs); err != nil || gs == nil {
		t.Fatalf("posixGroups %s is not an array: %v", raw, err)
	}
	var names []string
	for _, g := range gs {
		var s string
		if g.GID == nil || json.Unmarshal(*g.GID, &s) != nil {
			t.Fatalf("group %q: gid is not a string", g.Name)
		}
		if gid, err := strconv.ParseUint(s, 10, 32); err != nil || gid == 0 || g.Name == "" {
			t.Fatalf("group %q gid %q rejected by the guest", g.Name, s)
		}
		names = append(names, g.Name)
	}
	return names
}

func TestGuestGroupPaging(t *testing.T) {
	cfg := emulator.Config{}
	var all, members []string
	for i := range 7 {
		cfg.Accounts = append(cfg.Accounts, emulator.Account{Email: fmt.Sprintf("user%d@example.com", i)})
		members = append(members, fmt.Sprintf("user%d@example.com", i))
	}
	for i := range 5 {
		all = append(all, fmt.Sprintf("g%d", i))
		cfg.Groups = append(cfg.Groups, emulator.Group{Name: all[i], GID: int64(6000 + i), Members: members})
	}
	srv := emulatortest.Start(t, cfg)
	provision(t, srv.Emulator, members[:6]...) // user6 never reaches the VM

	// NssCache::LoadJsonGroupsToCache: 1..pagesize groups on every page, and
	// the "0" page is the last one and carries groups itself; a page after
	// it without posixGroups would read as "no groups" and drop the cache.
	for _, size := range []int{1, 2, 3, 5, 499} {
		t.Run("all/"+strconv.Itoa(size), func(t *testing.T) {
			var got []string
			pages := guestPages(t, srv, "groups?pagesize="+strconv.Itoa(size))
			for _, p := range pages {
				names := groupNames(t, p["posixGroups"])
				if len(names) == 0 || len(names) > size {
					t.Fatalf("page of %d groups for pagesize %d", len(names), size)
				}
				got = append(got, names...)
			}
			if want := (5 + size - 1) / size; len(pages) != want || !reflect.DeepEqual(got, all) {
				t.Errorf("%d pages %v, want %d pages %v", len(pages), got, want, all)
			}
		})
	}

	// GetGroupsForUser: the guest sends no pagesize; every page, the "0" one
	// included, is parsed by ParseJsonToGroups.
	for _, q := range []string{"groups?email=user0@example.com", "groups?email=user0@example.com&pagesize=2"} {
		t.Run(q, func(t *testing.T) {
			var got []string
			pages := guestPages(t, srv, q)
			for _, p := range pages {
				got = append(got, groupNames(t, p["posixGroups"])...)
			}
			want := 1
			if strings.HasSuffix(q, "pagesize=2") {
				want = 3
			}
			if len(pages) != want || !reflect.DeepEqual(got, all) {
				t.Errorf("%d pages %v, want %d pages %v", len(pages), got, want, all)
			}
		})
	}

	// GetUsersForGroup: usernames of every page, the "0" one included.
	for _, q := range []string{"users?groupname=g3", "users?groupname=g3&pagesize=4"} {
		t.Run(q, func(t *testing.T) {
			var got []string
			pages := guestPages(t, srv, q)
			for _, p := range pages {
				var names []string
				if err := json.Unmarshal(p["usernames"], &names); err != nil || len(names) == 0 {
					t.Fatalf("usernames %s: %v", p["usernames"], err)
				}
				got = append(got, names...)
			}
			want := []string{"user0_example_com", "user1_example_com", "user2_example_com", "user3_example_com", "user4_example_com", "user5_example_com"}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("%d pages %v, want %v", len(pages), got, want)
			}
		})
	}

	// No groups at all: nothing but the end marker, which the guest reads as
	// "no groups" (ENOMSG), not as a failure; an empty array would be one.
	bare := emulatortest.Start(t, emulator.Config{})
	if code, _, body := mdGet(t, bare, "oslogin/groups?pagesize=499"); code != 200 || body != `{"nextPageToken":"0"}` {
		t.Errorf("no groups: %d %s", code, body)
	}
}

func TestGuestGroupsDisabled(t *testing.T) {
	cfg := groupsConfig()
	cfg.OSLoginDisabled = true
	srv := emulatortest.Start(t, cfg)
	provision(t, srv.Emulator, userEmail)
	// A 404 from the listing tells the guest's cache refresher that OS Login is off.
	for _, q := range []string{"groups?pagesize=499", "groups?groupname=devs", "groups?gid=5001",
		"groups?email=" + url.QueryEscape(userEmail), "users?groupname=devs"} {
		if code, _, body := mdGet(t, srv, "oslogin/"+q); code != 404 {
			t.Errorf("%s: %d %s, want 404", q, code, body)
		}
	}
}

func TestGuestGroupsCallsAndFaults(t *testing.T) {
	srv := emulatortest.Start(t, groupsConfig())
	emu := srv.Emulator
	emu.SetFault(emulator.Fault{Methods: "metadata.oslogin.groups", Status: 503, Times: 1})
	if code, _, _ := mdGet(t, srv, "oslogin/groups?groupname=devs"); code != 503 {
		t.Errorf("faulted lookup: %d, want 503", code)
	}
	if code, _, _ := mdGet(t, srv, "oslogin/groups?groupname=devs"); code != 200 {
		t.Errorf("after the fault: %d", code)
	}
	if code, _, _ := mdGet(t, srv, "oslogin/users?groupname=devs"); code != 200 {
		t.Errorf("members: %d", code)
	}
	calls := emu.Calls()
	if calls["metadata.oslogin.groups"] != 2 || calls["metadata.oslogin.users"] != 1 {
		t.Errorf("calls %v", calls)
	}
}

func TestGroupConfigValidation(t *testing.T) {
	accounts := []emulator.Account{{Email: "a@example.com", UID: 2000}, {Email: "b@example.com", Username: "bee"}}
	tests := []struct {
		name   string
		groups []emulator.Group
		want   string
	}{
		{"leading dash", []emulator.Group{{Name: "-devs", GID: 5000}}, "does not match"},
		{"colon", []emulator.Group{{Name: "de:vs", GID: 5000}}, "does not match"},
		{"empty name", []emulator.Group{{GID: 5000}}, "does not match"},
		{"too long", []emulator.Group{{Name: strings.Repeat("g", 33), GID: 5000}}, "does not match"},
		{"no gid", []emulator.Group{{Name: "devs"}}, "outside"},
		{"system gid", []emulator.Group{{Name: "devs", GID: 999}}, "outside"},
		{"gid -1", []emulator.Group{{Name: "devs", GID: 1<<32 - 1}}, "outside"},
		{"duplicate name", []emulator.Group{{Name: "devs", GID: 5000}, {Name: "devs", GID: 5001}}, "duplicate name"},
		{"duplicate gid", []emulator.Group{{Name: "devs", GID: 5000}, {Name: "ops", GID: 5000}}, "already used by group devs"},
		{"gid of a user", []emulator.Group{{Name: "devs", GID: 2000}}, "self-group of a@example.com"},
		{"name of a user", []emulator.Group{{Name: "bee", GID: 5000}}, "self-group of b@example.com"},
		{"unknown member", []emulator.Group{{Name: "devs", GID: 5000, Members: []string{"ghost@example.com"}}}, "not a known account"},
		{"member twice", []emulator.Group{{Name: "devs", GID: 5000, Members: []string{"a@example.com", "A@example.com"}}}, "listed twice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := emulator.New(emulator.Options{Config: emulator.Config{Accounts: accounts, Groups: tt.groups}})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want %q", err, tt.want)
			}
		})
	}

	emu, err := emulator.New(emulator.Options{Config: emulator.Config{Accounts: accounts,
		Groups: []emulator.Group{{Name: "devs", GID: 5000, Members: []string{"B@EXAMPLE.COM"}}}}})
	if err != nil {
		t.Fatal(err)
	}
	if gs := emu.Config().Groups; len(gs) != 1 || !reflect.DeepEqual(gs[0].Members, []string{"b@example.com"}) {
		t.Errorf("members not spelt as their accounts: %+v", gs)
	}
	// Accounts added later cannot take a group's name or gid either.
	if err := emu.AddAccount(emulator.Account{Email: "c@example.com", UID: 5000}); err == nil || !strings.Contains(err.Error(), "group devs") {
		t.Errorf("uid = gid of a group: %v", err)
	}
	if err := emu.AddAccount(emulator.Account{Email: "d@example.com", Username: "devs"}); err == nil || !strings.Contains(err.Error(), "group devs") {
		t.Errorf("username = group name: %v", err)
	}
	if emulator.DefaultConfig().Groups != nil {
		t.Error("groups by default")
	}
}

func TestParseConfigGroups(t *testing.T) {
	path := filepath.Join(t.TempDir(), "emulator.json")
	if err := os.WriteFile(path, []byte(`{
		"accounts": [{"email": "ops@example.com", "username": "ops"}],
		"groups": [{"name": "devs", "gid": 5001, "members": ["ops@example.com"]}, {"name": "empty", "gid": 5002}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := emulator.LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	want := []emulator.Group{{Name: "devs", GID: 5001, Members: []string{"ops@example.com"}}, {Name: "empty", GID: 5002}}
	if !reflect.DeepEqual(c.Groups, want) {
		t.Fatalf("groups %+v", c.Groups)
	}
	srv := emulatortest.Start(t, c)
	provision(t, srv.Emulator, "ops@example.com")
	if _, _, body := mdGet(t, srv, "oslogin/users?groupname=devs"); body != `{"usernames":["ops"],"nextPageToken":"0"}` {
		t.Errorf("served %s", body)
	}
	for _, bad := range []string{
		`{"groups": [{"name": "devs", "gid": 5001, "member": []}]}`, // typo
		`{"groups": [{"name": "devs", "gid": "5001"}]}`,
		`{"groups": {"name": "devs"}}`,
	} {
		if _, err := emulator.ParseConfig([]byte(bad)); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
}

// TestAdminGroups drives the group routes through AdminClient and checks
// that the VM sees every change at once.
func TestAdminGroups(t *testing.T) {
	srv := emulatortest.Start(t, testConfig())
	provision(t, srv.Emulator, saEmail, userEmail)
	sa := account(t, srv.Emulator, saEmail)
	ctx := context.Background()
	admin := srv.Admin
	status := func(q string) int {
		code, _, _ := mdGet(t, srv, "oslogin/"+q)
		return code
	}

	if gs, err := admin.Groups(ctx); err != nil || len(gs) != 0 {
		t.Fatalf("groups %+v, %v", gs, err)
	}
	g, err := admin.AddGroup(ctx, emulator.Group{Name: "devs", GID: 5001, Members: []string{strings.ToUpper(userEmail)}})
	if err != nil || !reflect.DeepEqual(g, emulator.Group{Name: "devs", GID: 5001, Members: []string{userEmail}}) {
		t.Fatalf("add: %+v, %v", g, err)
	}
	for _, bad := range []emulator.Group{
		{Name: "devs", GID: 5002},
		{Name: "ops", GID: 5002, Members: []string{"ghost@example.com"}},
		{Name: "ops:x", GID: 5002},
	} {
		if _, err := admin.AddGroup(ctx, bad); err == nil || !strings.Contains(err.Error(), "HTTP 400") {
			t.Errorf("add %+v: %v", bad, err)
		}
	}
	if _, _, body := mdGet(t, srv, "oslogin/users?groupname=devs"); body != `{"usernames":["first_last_tag_example_com"],"nextPageToken":"0"}` {
		t.Errorf("members %s", body)
	}

	g, err = admin.SetGroupMembers(ctx, "devs", []string{saEmail})
	if err != nil || !reflect.DeepEqual(g.Members, []string{saEmail}) {
		t.Fatalf("set members: %+v, %v", g, err)
	}
	if _, _, body := mdGet(t, srv, "oslogin/groups?email="+sa.UniqueID); body != `{"posixGroups":[{"name":"devs","gid":"5001"}],"nextPageToken":"0"}` {
		t.Errorf("groups of the SA %s", body)
	}
	if _, _, body := mdGet(t, srv, "oslogin/groups?email="+url.QueryEscape(userEmail)); body != `{"posixGroups":[],"nextPageToken":"0"}` {
		t.Errorf("groups of the removed member %s", body)
	}
	if _, err := admin.SetGroupMembers(ctx, "devs", []string{"ghost@example.com"}); err == nil || !strings.Contains(err.Error(), "HTTP 400") {
		t.Errorf("unknown member: %v", err)
	}
	if _, err := admin.SetGroupMembers(ctx, "nope", nil); err == nil || !strings.Contains(err.Error(), "HTTP 404") {
		t.Errorf("unknown group: %v", err)
	}
	if g, err := admin.SetGroupMembers(ctx, "devs", nil); err != nil || len(g.Members) != 0 {
		t.Errorf("clear members: %+v, %v", g, err)
	}

	st, err := admin.State(ctx)
	if err != nil || len(st.Groups) != 1 || st.Groups[0].Name != "devs" {
		t.Errorf("state groups %+v, %v", st.Groups, err)
	}
	if err := admin.DeleteGroup(ctx, "devs"); err != nil {
		t.Fatal(err)
	}
	if code := status("groups?groupname=devs"); code != 404 {
		t.Errorf("deleted group: %d", code)
	}
	if err := admin.DeleteGroup(ctx, "devs"); err == nil || !strings.Contains(err.Error(), "HTTP 404") {
		t.Errorf("delete twice: %v", err)
	}
	if gs, err := admin.Groups(ctx); err != nil || len(gs) != 0 {
		t.Errorf("after delete %+v, %v", gs, err)
	}
}
