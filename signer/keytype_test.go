package signer

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestParseKeyType(t *testing.T) {
	tests := []struct {
		in      string
		want    KeyType
		wantErr string // substring; empty means success
	}{
		{in: "ed25519", want: Ed25519},
		{in: "ecdsa-p256", want: ECDSAP256},
		{in: "ecdsa-p384", want: ECDSAP384},
		{in: "rsa-3072", want: RSA3072},
		{in: "rsa-4096", want: RSA4096},
		{in: "  ED25519 ", want: Ed25519},
		{in: "RSA-4096", want: RSA4096},
		{in: "rsa-2048", wantErr: "at least 3072 bits"},
		{in: "rsa-1024", wantErr: "at least 3072 bits"},
		{in: "rsa", wantErr: "needs a size"},
		{in: "dsa", wantErr: "unknown key type"},
		{in: "", wantErr: "unknown key type"},
		{in: "ecdsa-p521", wantErr: "unknown key type"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseKeyType(tt.in)
			if tt.wantErr != "" {
				if err == nil {
					t.Fatalf("ParseKeyType(%q) = %v, want error", tt.in, got)
				}
				if !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("error %q does not contain %q", err, tt.wantErr)
				}
				// Every error lists the valid values.
				for _, kt := range KeyTypes() {
					if !strings.Contains(err.Error(), kt.String()) {
						t.Errorf("error %q does not list %s", err, kt)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseKeyType(%q): %v", tt.in, err)
			}
			if got != tt.want {
				t.Errorf("ParseKeyType(%q) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}

func TestKeyTypeRoundTrip(t *testing.T) {
	for _, kt := range KeyTypes() {
		if !kt.Valid() {
			t.Errorf("%v not valid", kt)
		}
		var got KeyType
		if err := got.Set(kt.String()); err != nil || got != kt {
			t.Errorf("Set(%q) = %v, %v", kt.String(), got, err)
		}
		b, err := json.Marshal(kt)
		if err != nil {
			t.Fatalf("marshal %v: %v", kt, err)
		}
		var back KeyType
		if err := json.Unmarshal(b, &back); err != nil || back != kt {
			t.Errorf("json round trip of %v: %s -> %v, %v", kt, b, back, err)
		}
	}
	var zero KeyType
	if zero.Valid() {
		t.Error("zero KeyType is valid")
	}
	if _, err := zero.MarshalText(); err == nil {
		t.Error("MarshalText of zero KeyType succeeded")
	}
	if got := zero.String(); got != "KeyType(0)" {
		t.Errorf("zero.String() = %q", got)
	}
	if got := zero.Type(); got != "key-type" {
		t.Errorf("Type() = %q", got)
	}
	if _, err := Generate(zero); err == nil {
		t.Error("Generate(0) succeeded")
	}
}
