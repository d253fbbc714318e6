package iaprelay_test

import (
	"bytes"
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	"github.com/oslogin-agent/oslogin-agent/internal/emulator/iaprelay"
)

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestFrameGoldenVectors checks the encoders and the decoder against the
// vectors of reference §A4 (from gcloud's own unit test).
func TestFrameGoldenVectors(t *testing.T) {
	tests := []struct {
		name  string
		bytes string
		enc   []byte
		want  iaprelay.Frame
	}{
		{"ack 1", "00 07 00 00 00 00 00 00 00 01", iaprelay.AppendAck(nil, 1), iaprelay.Frame{Tag: iaprelay.TagAck, Ack: 1}},
		{"ack 65534", "00 07 00 00 00 00 00 00 ff fe", iaprelay.AppendAck(nil, 65534), iaprelay.Frame{Tag: iaprelay.TagAck, Ack: 65534}},
		{"data", "00 04 00 00 00 06 99 61 62 63 64 65", iaprelay.AppendData(nil, []byte("\x99abcde")),
			iaprelay.Frame{Tag: iaprelay.TagData, Data: []byte("\x99abcde")}},
		{"sid", "00 01 00 00 00 01 7a", iaprelay.AppendConnectSuccessSID(nil, "z"), iaprelay.Frame{Tag: iaprelay.TagConnectSuccessSID, SID: "z"}},
		{"reconnect ack", "00 02 00 00 00 00 00 00 0b d5", iaprelay.AppendReconnectSuccessAck(nil, 3029),
			iaprelay.Frame{Tag: iaprelay.TagReconnectSuccessAck, Ack: 3029}},
		{"unknown tag", "10 00 01 02 03", nil, iaprelay.Frame{Tag: 4096, Rest: []byte{1, 2, 3}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := unhex(t, tt.bytes)
			if tt.enc != nil && !bytes.Equal(tt.enc, b) {
				t.Errorf("encoded % x, want % x", tt.enc, b)
			}
			got, err := iaprelay.DecodeFrame(b)
			if err != nil {
				t.Fatal(err)
			}
			if got.Tag != tt.want.Tag || got.Ack != tt.want.Ack || got.SID != tt.want.SID ||
				!bytes.Equal(got.Data, tt.want.Data) || !bytes.Equal(got.Rest, tt.want.Rest) {
				t.Errorf("decoded %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestFrameMalformed(t *testing.T) {
	for _, s := range []string{"", "00", "00 04 00 00", "00 04 00 00 00 05 61", "00 07 00 00 00", "00 01 ff ff ff ff"} {
		if _, err := iaprelay.DecodeFrame(unhex(t, s)); !errors.Is(err, iaprelay.ErrMalformed) {
			t.Errorf("DecodeFrame(%q) = %v, want ErrMalformed", s, err)
		}
	}
}
