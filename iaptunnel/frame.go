package iaptunnel

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Subprotocol is the WebSocket subprotocol IAP requires and echoes.
const Subprotocol = "relay.tunnel.cloudproxy.app"

// Frame tags of relay protocol v4. Peers ignore tags they do not know.
const (
	tagConnectSuccessSID   uint16 = 0x0001
	tagReconnectSuccessAck uint16 = 0x0002
	tagData                uint16 = 0x0004
	tagAck                 uint16 = 0x0007
)

// MaxDataLen is the largest DATA payload; longer writes are split.
const MaxDataLen = 16384

// frame is one decoded message; only the fields of its tag are set. Data
// aliases the message.
type frame struct {
	tag  uint16
	sid  string
	ack  uint64
	data []byte
}

// appendAck appends an ACK of the absolute position ack.
func appendAck(b []byte, ack uint64) []byte {
	b = binary.BigEndian.AppendUint16(b, tagAck)
	return binary.BigEndian.AppendUint64(b, ack)
}

// appendData appends a DATA frame; callers keep p within 1..MaxDataLen.
func appendData(b, p []byte) []byte {
	b = binary.BigEndian.AppendUint16(b, tagData)
	b = binary.BigEndian.AppendUint32(b, uint32(len(p)))
	return append(b, p...)
}

// decodeFrame parses one message. Trailing bytes after a known frame are
// tolerated (gcloud logs and drops them); an unknown tag decodes to the tag
// alone so the caller can ignore it.
// errTruncated marks a message shorter than its frame says: a relay never
// sends one, but the WebSocket library can hand over a message cut short
// by a broken connection as complete (when the connection ends where a
// payload read begins), so the session treats it as a drop and resumes.
var errTruncated = errors.New("cut short")

func decodeFrame(msg []byte) (frame, error) {
	if len(msg) < 2 {
		return frame{}, fmt.Errorf("frame of %d bytes has no tag: %w", len(msg), errTruncated)
	}
	f := frame{tag: binary.BigEndian.Uint16(msg)}
	body := msg[2:]
	switch f.tag {
	case tagConnectSuccessSID, tagData:
		if len(body) < 4 {
			return frame{}, fmt.Errorf("frame tag %d has no length: %w", f.tag, errTruncated)
		}
		n := binary.BigEndian.Uint32(body)
		if uint64(n) > uint64(len(body)-4) {
			return frame{}, fmt.Errorf("frame tag %d announces %d bytes but has %d: %w", f.tag, n, len(body)-4, errTruncated)
		}
		if f.tag == tagData {
			f.data = body[4 : 4+n]
		} else {
			f.sid = string(body[4 : 4+n])
		}
	case tagReconnectSuccessAck, tagAck:
		if len(body) < 8 {
			return frame{}, fmt.Errorf("frame tag %d needs 8 bytes, has %d: %w", f.tag, len(body), errTruncated)
		}
		f.ack = binary.BigEndian.Uint64(body)
	}
	return f, nil
}
