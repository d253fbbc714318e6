package iaprelay

// CloseCode is a WebSocket close code of the relay (reference §A8; names
// from IAP Desktop's SshRelayCloseCode enum).
type CloseCode int

// The close codes this relay sends.
const (
	CloseNormal                   CloseCode = 1000
	CloseGoingAway                CloseCode = 1001
	CloseErrorUnknown             CloseCode = 4000
	CloseSIDUnknown               CloseCode = 4001
	CloseSIDInUse                 CloseCode = 4002
	CloseFailedToConnectToBackend CloseCode = 4003
	CloseReauthenticationRequired CloseCode = 4004
	CloseBadAck                   CloseCode = 4005
	CloseInvalidAck               CloseCode = 4006
	CloseInvalidWebsocketOpcode   CloseCode = 4007
	CloseInvalidTag               CloseCode = 4008
	CloseDestinationWriteFailed   CloseCode = 4009
	CloseDestinationReadFailed    CloseCode = 4010
	CloseInvalidData              CloseCode = 4013
	CloseNotAuthorized            CloseCode = 4033
	CloseLookupFailed             CloseCode = 4047
	CloseLookupFailedReconnect    CloseCode = 4051
	CloseFailedToRewind           CloseCode = 4074
)

// Reason is the close reason text. Three are documented verbatim in the
// wild ('failed to connect to backend', 'not authorized', reauthentication
// required); each is the enum name in lower case with spaces, so the
// others follow that same rule (the reference lists their exact texts as
// an open question).
func (c CloseCode) Reason() string {
	switch c {
	case CloseNormal:
		return ""
	case CloseGoingAway:
		return "going away"
	case CloseErrorUnknown:
		return "error unknown"
	case CloseSIDUnknown:
		return "sid unknown"
	case CloseSIDInUse:
		return "sid in use"
	case CloseFailedToConnectToBackend:
		return "failed to connect to backend"
	case CloseReauthenticationRequired:
		return "reauthentication required"
	case CloseBadAck:
		return "bad ack"
	case CloseInvalidAck:
		return "invalid ack"
	case CloseInvalidWebsocketOpcode:
		return "invalid websocket opcode"
	case CloseInvalidTag:
		return "invalid tag"
	case CloseDestinationWriteFailed:
		return "destination write failed"
	case CloseDestinationReadFailed:
		return "destination read failed"
	case CloseInvalidData:
		return "invalid data"
	case CloseNotAuthorized:
		return "not authorized"
	case CloseLookupFailed:
		return "lookup failed"
	case CloseLookupFailedReconnect:
		return "lookup failed reconnect"
	case CloseFailedToRewind:
		return "failed to rewind"
	}
	return "error unknown"
}
