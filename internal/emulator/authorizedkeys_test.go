package emulator_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/oslogin-agent/oslogin-agent/internal/emulator"
	"github.com/oslogin-agent/oslogin-agent/internal/emulator/emulatortest"
)

func TestAuthorizedKeys(t *testing.T) {
	clock := &fixedClock{t: time.Date(2032, 1, 1, 0, 0, 0, 0, time.UTC)}
	srv := emulatortest.StartWithOptions(t, emulator.Options{Config: testConfig(), Clock: clock})
	emu := srv.Emulator
	now := emu.Now()
	none, future, past := sshKey(t, 70, "none\n"), sshKey(t, 71, "future"), sshKey(t, 72, "past")
	for _, k := range []struct {
		key string
		exp time.Time
	}{{none, time.Time{}}, {future, now.Add(time.Minute)}, {past, now.Add(-time.Minute)}} {
		if _, err := emu.ImportKey(saEmail, "", k.key, k.exp); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := emu.ImportKey("denied@example.com", "", sshKey(t, 73, ""), time.Time{}); err != nil {
		t.Fatal(err)
	}
	saUser := "sa_" + account(t, emu, saEmail).UniqueID

	tests := []struct {
		name     string
		user     string
		want     []string
		wantErr  error
		requests int // metadata requests made
	}{
		{"allowed", saUser, []string{none, future}, nil, 2},
		{"denied", "denied_example_com", nil, emulator.ErrLoginDenied, 2},
		{"unknown", "nobody", nil, emulator.ErrUnknownUser, 1},
		{"invalid username", "-rf", nil, emulator.ErrUnknownUser, 0},
		{"too long", strings.Repeat("a", 33), nil, emulator.ErrUnknownUser, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			emu.ResetCalls()
			keys, err := emulator.AuthorizedKeys(context.Background(),
				emulator.AuthorizedKeysOptions{MetadataHost: srv.Host, Now: emu.Now}, tt.user)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil && err != nil) {
				t.Fatalf("error %v, want %v", err, tt.wantErr)
			}
			slices.Sort(keys)
			slices.Sort(tt.want)
			if !slices.Equal(keys, tt.want) {
				t.Errorf("keys %q, want %q", keys, tt.want)
			}
			calls := emu.Calls()
			if n := calls["metadata.oslogin.users"] + calls["metadata.oslogin.authorize"]; n != tt.requests {
				t.Errorf("%d metadata requests, want %d (%v)", n, tt.requests, calls)
			}
		})
	}

	// The VM's own clock filters too: a key the server still serves is dropped.
	keys, err := emulator.AuthorizedKeys(context.Background(), emulator.AuthorizedKeysOptions{
		MetadataHost: srv.Host, Now: func() time.Time { return now.Add(2 * time.Minute) }}, saUser)
	if err != nil || !slices.Equal(keys, []string{none}) {
		t.Errorf("with a later VM clock: %q, %v", keys, err)
	}
	if _, err := emulator.AuthorizedKeys(context.Background(), emulator.AuthorizedKeysOptions{}, saUser); err == nil {
		t.Error("no metadata host accepted")
	}
}

// TestAuthorizedKeysRetries: like the guest, retry up to 3 times on answers
// other than 200/400/404, and not on transport errors.
func TestAuthorizedKeysRetries(t *testing.T) {
	srv := emulatortest.Start(t, testConfig())
	emu := srv.Emulator
	key := sshKey(t, 74, "")
	if _, err := emu.ImportKey(saEmail, "", key, time.Time{}); err != nil {
		t.Fatal(err)
	}
	user := "sa_" + account(t, emu, saEmail).UniqueID
	opts := emulator.AuthorizedKeysOptions{MetadataHost: srv.Host, Backoff: time.Millisecond}
	tests := []struct {
		name    string
		fault   emulator.Fault
		ok      bool
		lookups int
	}{
		{"two 503s then success", emulator.Fault{Methods: "metadata.oslogin.users", Status: 503, Times: 2}, true, 3},
		{"persistent 500", emulator.Fault{Methods: "metadata.oslogin.users", Status: 500}, false, 4},
		{"429 on authorize", emulator.Fault{Methods: "metadata.oslogin.authorize", Status: 429, Times: 3}, true, 1},
		{"404 is final", emulator.Fault{Methods: "metadata.oslogin.users", Status: 404}, false, 1},
		{"dropped connection is final", emulator.Fault{Methods: "metadata.oslogin.users", Drop: true}, false, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			emu.ClearFaults()
			emu.ResetCalls()
			emu.SetFault(tt.fault)
			keys, err := emulator.AuthorizedKeys(context.Background(), opts, user)
			if tt.ok != (err == nil) || tt.ok != slices.Equal(keys, []string{key}) {
				t.Errorf("keys %q, err %v", keys, err)
			}
			if n := emu.Calls()["metadata.oslogin.users"]; n != tt.lookups {
				t.Errorf("%d user lookups, want %d", n, tt.lookups)
			}
		})
	}

	// A closed port is a transport error, reported and not retried.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	if _, err := emulator.AuthorizedKeys(context.Background(), emulator.AuthorizedKeysOptions{MetadataHost: closed}, user); err == nil ||
		errors.Is(err, emulator.ErrUnknownUser) || errors.Is(err, emulator.ErrLoginDenied) {
		t.Errorf("closed port: %v", err)
	}
}

// TestAuthorizedKeysAgainstGuestJSON feeds the parsing rules of contract 7.4
// through a scripted metadata server, including shapes the emulator itself
// never emits.
func TestAuthorizedKeysAgainstGuestJSON(t *testing.T) {
	const nowUsec = 1_900_000_000_000_000
	now := time.UnixMicro(nowUsec)
	tests := []struct {
		name      string
		users     string
		authorize string
		want      []string
	}{
		{"expiry edge cases", `{"loginProfiles":[{"name":"u@example.com","sshPublicKeys":{
			"a":{"key":"missing"},
			"b":{"key":"zero number","expirationTimeUsec":0},
			"c":{"key":"zero string","expirationTimeUsec":"0"},
			"d":{"key":"empty string","expirationTimeUsec":""},
			"e":{"key":"garbage string","expirationTimeUsec":"soon"},
			"f":{"key":"past number","expirationTimeUsec":1899999999999999},
			"g":{"key":"past string","expirationTimeUsec":"1899999999999999"},
			"h":{"key":"exactly now","expirationTimeUsec":"1900000000000000"},
			"i":{"key":"future number","expirationTimeUsec":1900000000000001},
			"j":{"key":"future string","expirationTimeUsec":"2000000000000000"},
			"k":{"key":"float","expirationTimeUsec":1.5},
			"l":{"key":"bool","expirationTimeUsec":true},
			"m":{"key":"null","expirationTimeUsec":null},
			"n":{"key":5},
			"o":"not an object",
			"p":{"key":""},
			"q":{"key":"trailing newline\n"}}}]}`,
			`{"success":true}`,
			[]string{"missing", "exactly now", "future number", "future string", "float", "bool", "null", "trailing newline\n"}},
		{"only the first profile", `{"loginProfiles":[{"name":"a","sshPublicKeys":{"x":{"key":"first"}}},{"name":"b","sshPublicKeys":{"y":{"key":"second"}}}]}`,
			`{"success":true}`, []string{"first"}},
		{"keys not a map", `{"loginProfiles":[{"name":"a","sshPublicKeys":[{"key":"k"}]}]}`, `{"success":true}`, nil},
		{"success false", `{"loginProfiles":[{"name":"a","sshPublicKeys":{"x":{"key":"k"}}}]}`, `{"success":false}`, nil},
		{"success missing", `{"loginProfiles":[{"name":"a","sshPublicKeys":{"x":{"key":"k"}}}]}`, `{}`, nil},
		{"no name", `{"loginProfiles":[{"sshPublicKeys":{"x":{"key":"k"}}}]}`, `{"success":true}`, nil},
		{"no profiles", `{"loginProfiles":[]}`, `{"success":true}`, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var authzEmail string
			fake := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.Header.Get("Metadata-Flavor") != "Google" {
					w.WriteHeader(403)
					return
				}
				switch r.URL.Path {
				case "/computeMetadata/v1/oslogin/users":
					w.Write([]byte(tt.users))
				case "/computeMetadata/v1/oslogin/authorize":
					authzEmail = r.URL.Query().Get("email")
					if r.URL.Query().Get("policy") != "login" {
						w.WriteHeader(400)
						return
					}
					w.Write([]byte(tt.authorize))
				default:
					w.WriteHeader(404)
				}
			}))
			defer fake.Close()
			keys, err := emulator.AuthorizedKeys(context.Background(), emulator.AuthorizedKeysOptions{
				MetadataHost: strings.TrimPrefix(fake.URL, "http://"), Now: func() time.Time { return now }}, "someone")
			if !slices.Equal(keys, tt.want) {
				t.Errorf("keys %q, want %q (err %v)", keys, tt.want, err)
			}
			if tt.want != nil && authzEmail == "" {
				t.Error("authorize was not asked")
			}
			if got := emulator.UnexpiredKeys([]byte(tt.users), now); tt.want != nil && !slices.Equal(got, tt.want) {
				t.Errorf("UnexpiredKeys %q", got)
			}
		})
	}
}
