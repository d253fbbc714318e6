package destination_test

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/oslogin-agent/oslogin-agent/destination"
)

// testKeys are throwaway public host keys, base64 as the guest agent
// publishes them.
type testKeys struct{ ed, ed2, ecdsa string }

func newTestKeys(t *testing.T) testKeys {
	t.Helper()
	b64 := func(pub any) string {
		k, err := ssh.NewPublicKey(pub)
		if err != nil {
			t.Fatal(err)
		}
		return base64.StdEncoding.EncodeToString(k.Marshal())
	}
	ed, _, _ := ed25519.GenerateKey(rand.Reader)
	ed2, _, _ := ed25519.GenerateKey(rand.Reader)
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return testKeys{ed: b64(ed), ed2: b64(ed2), ecdsa: b64(&ec.PublicKey)}
}

func TestParseHostKeys(t *testing.T) {
	k := newTestKeys(t)
	hk := func(key, value string) destination.GuestAttribute {
		return destination.GuestAttribute{Namespace: "hostkeys", Key: key, Value: value}
	}
	cert := "ssh-ed25519-cert-v01@openssh.com"
	for _, tc := range []struct {
		name     string
		attrs    []destination.GuestAttribute
		want     []string // "type base64", in output order
		rejected []string // substrings, one per rejection
	}{
		{name: "two types, written in preference order",
			attrs: []destination.GuestAttribute{hk("ecdsa-sha2-nistp256", k.ecdsa), hk("ssh-ed25519", k.ed)},
			want:  []string{"ssh-ed25519 " + k.ed, "ecdsa-sha2-nistp256 " + k.ecdsa}},
		{name: "only the first field of a value with a newline",
			attrs: []destination.GuestAttribute{hk("ssh-ed25519", k.ed+"\ncompute.1 ssh-ed25519 "+k.ed2)},
			want:  []string{"ssh-ed25519 " + k.ed}},
		{name: "leading and trailing whitespace",
			attrs: []destination.GuestAttribute{hk("ssh-ed25519", " \t"+k.ed+" root@vm\n")},
			want:  []string{"ssh-ed25519 " + k.ed}},
		{name: "not base64",
			attrs:    []destination.GuestAttribute{hk("ssh-ed25519", "not*base64")},
			rejected: []string{"hostkeys/ssh-ed25519: value is not canonical base64"}},
		{name: "base64 without padding does not round-trip",
			attrs:    []destination.GuestAttribute{hk("ssh-ed25519", strings.TrimRight(k.ecdsa, "="))},
			rejected: []string{"not canonical base64"}},
		{name: "base64 of something that is not a key",
			attrs:    []destination.GuestAttribute{hk("ssh-ed25519", base64.StdEncoding.EncodeToString([]byte("hello")))},
			rejected: []string{"not an SSH public key"}},
		{name: "ed25519 key labelled ssh-rsa",
			attrs:    []destination.GuestAttribute{hk("ssh-rsa", k.ed)},
			rejected: []string{"hostkeys/ssh-rsa: value is a ssh-ed25519 key, published as ssh-rsa"}},
		{name: "ed25519 key labelled ecdsa, next to a good one",
			attrs:    []destination.GuestAttribute{hk("ecdsa-sha2-nistp256", k.ed), hk("ssh-ed25519", k.ed)},
			want:     []string{"ssh-ed25519 " + k.ed},
			rejected: []string{"published as ecdsa-sha2-nistp256"}},
		{name: "unsupported type",
			attrs:    []destination.GuestAttribute{hk("ssh-dss", k.ed)},
			rejected: []string{"unsupported key type"}},
		{name: "certificate",
			attrs:    []destination.GuestAttribute{hk(cert, k.ed)},
			rejected: []string{"certificates are not accepted"}},
		{name: "other namespace",
			attrs:    []destination.GuestAttribute{{Namespace: "other", Key: "ssh-ed25519", Value: k.ed}},
			rejected: []string{"not in the hostkeys namespace"}},
		{name: "one type twice, same key",
			attrs: []destination.GuestAttribute{hk("ssh-ed25519", k.ed), hk("ssh-ed25519", k.ed+" \n")},
			want:  []string{"ssh-ed25519 " + k.ed}},
		{name: "one type twice, different keys: ambiguous, dropped",
			attrs:    []destination.GuestAttribute{hk("ssh-ed25519", k.ed), hk("ssh-ed25519", k.ed2), hk("ecdsa-sha2-nistp256", k.ecdsa)},
			want:     []string{"ecdsa-sha2-nistp256 " + k.ecdsa},
			rejected: []string{"published twice with different keys"}},
		{name: "empty value",
			attrs:    []destination.GuestAttribute{hk("ssh-ed25519", " \n")},
			rejected: []string{"empty value"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := destination.ParseHostKeys(tc.attrs)
			var lines []string
			for _, l := range strings.Split(strings.TrimSpace(destination.KnownHostsLines("compute.7", got.Keys)), "\n") {
				if l != "" {
					lines = append(lines, strings.TrimPrefix(l, "compute.7 "))
				}
			}
			if strings.Join(lines, "|") != strings.Join(tc.want, "|") {
				t.Errorf("lines:\n%s\nwant:\n%s", strings.Join(lines, "\n"), strings.Join(tc.want, "\n"))
			}
			if len(got.Rejected) != len(tc.rejected) {
				t.Fatalf("rejected %q; want %d like %q", got.Rejected, len(tc.rejected), tc.rejected)
			}
			for i, r := range tc.rejected {
				if !strings.Contains(got.Rejected[i], r) {
					t.Errorf("rejected[%d] = %q; want it to say %q", i, got.Rejected[i], r)
				}
			}
		})
	}
}

func TestKnownHostsLinesAlias(t *testing.T) {
	k := newTestKeys(t)
	keys := destination.ParseHostKeys([]destination.GuestAttribute{{Namespace: "hostkeys", Key: "ssh-ed25519", Value: k.ed}}).Keys
	// The alias is written verbatim: no [host]:port, no hashing.
	if got, want := destination.KnownHostsLines("compute.12", keys), "compute.12 ssh-ed25519 "+k.ed+"\n"; got != want {
		t.Errorf("got %q; want %q", got, want)
	}
	for _, bad := range []string{"", "compute.12 x", "a,b", "c\nd"} {
		if got := destination.KnownHostsLines(bad, keys); got != "" {
			t.Errorf("KnownHostsLines(%q) = %q; want nothing", bad, got)
		}
	}
}
