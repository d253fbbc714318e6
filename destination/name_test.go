package destination_test

import (
	"strings"
	"testing"

	"github.com/oslogin-agent/oslogin-agent/destination"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want destination.Name
		err  string
	}{
		{in: "vm-a", want: destination.Name{Instance: "vm-a"}},
		{in: "vm-a.us-central1-a.my-project", want: destination.Name{Instance: "vm-a", Zone: "us-central1-a", Project: "my-project"}},
		{in: "vm-a.us-central1-a.example.com:my-project", want: destination.Name{Instance: "vm-a", Zone: "us-central1-a", Project: "example.com:my-project"}},
		{in: "compute.1234567890123456789", want: destination.Name{ID: "1234567890123456789"}},
		{in: "[compute.12]:2222", want: destination.Name{ID: "12"}},
		{in: "compute.", err: "numeric instance id"},
		{in: "compute.012", err: "numeric instance id"},
		{in: "compute.12 ssh-rsa", err: "numeric instance id"},
		{in: "vm-a.us-central1-a", err: "NAME.ZONE.PROJECT"},
		{in: "VM", err: "lowercase"},
		{in: "vm-a.nowhere.my-project", err: "not a zone"},
		{in: "vm-a.us-central1-a.x", err: "not a project id"},
		{in: "", err: "no instance"},
		{in: "vm\n", err: "lowercase"},
	} {
		got, err := destination.Parse(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("Parse(%q) = %+v, %v; want error with %q", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("Parse(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
}

func TestNameString(t *testing.T) {
	for _, s := range []string{"vm-a", "vm-a.us-central1-a.my-project", "compute.42"} {
		n, err := destination.Parse(s)
		if err != nil || n.String() != s {
			t.Errorf("Parse(%q).String() = %q, %v", s, n.String(), err)
		}
	}
}
