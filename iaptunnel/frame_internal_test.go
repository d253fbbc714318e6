package iaptunnel

import (
	"bytes"
	"encoding/hex"
	"testing"
)

// Golden vectors from the reference (derived from gcloud's unit test).
func TestFrameGolden(t *testing.T) {
	for _, tt := range []struct {
		name string
		got  []byte
		want string
	}{
		{"ack 1", appendAck(nil, 1), "00070000000000000001"},
		{"ack 65534", appendAck(nil, 65534), "0007000000000000fffe"},
		{"data", appendData(nil, []byte("\x99abcde")), "0004000000069961626364 65"},
	} {
		want, _ := hex.DecodeString(string(bytes.ReplaceAll([]byte(tt.want), []byte(" "), nil)))
		if !bytes.Equal(tt.got, want) {
			t.Errorf("%s: % x, want % x", tt.name, tt.got, want)
		}
	}
	msg, _ := hex.DecodeString("0001000000017a")
	if f, err := decodeFrame(msg); err != nil || f.tag != tagConnectSuccessSID || f.sid != "z" {
		t.Errorf("sid: %+v %v", f, err)
	}
	msg, _ = hex.DecodeString("00020000000000000bd5")
	if f, err := decodeFrame(msg); err != nil || f.ack != 3029 {
		t.Errorf("reconnect ack: %+v %v", f, err)
	}
	if f, err := decodeFrame([]byte{0x10, 0x00, 1, 2}); err != nil || f.tag != 4096 {
		t.Errorf("unknown tag: %+v %v", f, err)
	}
	for _, bad := range []string{"00", "0004000000", "000400000005aa", "0007000000"} {
		b, _ := hex.DecodeString(bad)
		if _, err := decodeFrame(b); err == nil {
			t.Errorf("%s decoded", bad)
		}
	}
}
