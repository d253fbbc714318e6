package iaptunnel

import (
	"encoding/binary"
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
func decodeFrame(msg []byte) (frame, error) {
	if len(msg) < 2 {
		return frame{}, fmt.Errorf("frame of %d bytes has no tag", len(msg))
	}
	f := frame{tag: binary.BigEndian.Uint16(msg)}
	body := msg[2:]
	switch f.tag {
	case tagConnectSuccessSID, tagData:
		if len(body) < 4 {
			return frame{}, fmt.Errorf("frame tag %d has no length", f.tag)
		}
		n := binary.BigEndian.Uint32(body)
		if uint64(n) > uint64(len(body)-4) {
			return frame{}, fmt.Errorf("frame tag %d announces %d bytes but has %d", f.tag, n, len(body)-4)
		}
		if f.tag == tagData {
			f.data = body[4 : 4+n]
		} else {
			f.sid = string(body[4 : 4+n])
		}
	case tagReconnectSuccessAck, tagAck:
		if len(body) < 8 {
			return frame{}, fmt.Errorf("frame tag %d needs 8 bytes, has %d", f.tag, len(body))
		}
		f.ack = binary.BigEndian.Uint64(body)
	}
	return f, nil
}
