package iaprelay

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Subprotocol is the WebSocket subprotocol IAP requires and echoes.
const Subprotocol = "relay.tunnel.cloudproxy.app"

// Frame tags of relay protocol v4 (reference §A4). Tag 3 is deprecated and
// LONG_CLOSE (10) is not sent by this relay, as there is no evidence IAP
// sends it.
const (
	TagConnectSuccessSID   uint16 = 0x0001
	TagReconnectSuccessAck uint16 = 0x0002
	TagData                uint16 = 0x0004
	TagAck                 uint16 = 0x0007
	TagLongClose           uint16 = 0x000A
)

// MaxDataLen is the largest DATA payload; both sides split larger writes.
const MaxDataLen = 16384

// Frame is one decoded message. Only the fields of its Tag are set; an
// unknown tag decodes to Tag alone, with Rest holding the untouched bytes,
// because peers must ignore tags they do not know.
type Frame struct {
	Tag  uint16
	SID  string // CONNECT_SUCCESS_SID
	Ack  uint64 // ACK and RECONNECT_SUCCESS_ACK
	Data []byte // DATA; aliases the decoded message
	Rest []byte // bytes after the frame (unknown tags: everything after the tag)
}

// ErrMalformed marks a frame whose length fields do not fit the message.
var ErrMalformed = errors.New("iaprelay: malformed frame")

// AppendConnectSuccessSID appends tag · sidLen u32 · sid.
func AppendConnectSuccessSID(b []byte, sid string) []byte {
	b = binary.BigEndian.AppendUint16(b, TagConnectSuccessSID)
	b = binary.BigEndian.AppendUint32(b, uint32(len(sid)))
	return append(b, sid...)
}

// AppendReconnectSuccessAck appends tag · ack u64.
func AppendReconnectSuccessAck(b []byte, ack uint64) []byte {
	b = binary.BigEndian.AppendUint16(b, TagReconnectSuccessAck)
	return binary.BigEndian.AppendUint64(b, ack)
}

// AppendAck appends tag · ack u64; ack is an absolute byte position.
func AppendAck(b []byte, ack uint64) []byte {
	b = binary.BigEndian.AppendUint16(b, TagAck)
	return binary.BigEndian.AppendUint64(b, ack)
}

// AppendData appends tag · len u32 · payload. Callers keep payloads within
// 1..MaxDataLen; the relay never sends empty DATA.
func AppendData(b, payload []byte) []byte {
	b = binary.BigEndian.AppendUint16(b, TagData)
	b = binary.BigEndian.AppendUint32(b, uint32(len(payload)))
	return append(b, payload...)
}

// DecodeFrame parses one message. Errors wrap ErrMalformed. It does not
// judge direction or limits (an empty or oversized DATA decodes); the relay
// applies those rules, so the codec also serves test clients.
func DecodeFrame(msg []byte) (Frame, error) {
	if len(msg) < 2 {
		return Frame{}, fmt.Errorf("%w: %d bytes, no tag", ErrMalformed, len(msg))
	}
	f := Frame{Tag: binary.BigEndian.Uint16(msg)}
	body := msg[2:]
	switch f.Tag {
	case TagConnectSuccessSID, TagData:
		if len(body) < 4 {
			return Frame{}, fmt.Errorf("%w: tag %d without length", ErrMalformed, f.Tag)
		}
		n := binary.BigEndian.Uint32(body)
		if uint64(n) > uint64(len(body)-4) {
			return Frame{}, fmt.Errorf("%w: tag %d length %d exceeds %d bytes", ErrMalformed, f.Tag, n, len(body)-4)
		}
		v := body[4 : 4+n]
		if f.Tag == TagData {
			f.Data = v
		} else {
			f.SID = string(v)
		}
		f.Rest = body[4+n:]
	case TagReconnectSuccessAck, TagAck:
		if len(body) < 8 {
			return Frame{}, fmt.Errorf("%w: tag %d needs 8 bytes, has %d", ErrMalformed, f.Tag, len(body))
		}
		f.Ack = binary.BigEndian.Uint64(body)
		f.Rest = body[8:]
	default:
		f.Rest = body
	}
	return f, nil
}
