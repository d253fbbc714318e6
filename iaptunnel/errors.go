package iaptunnel

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
)

// Close codes IAP sends after the WebSocket upgrade (names from Google's
// IAP Desktop enum).
const (
	CloseNormal                   = 1000
	CloseGoingAway                = 1001
	CloseAbnormal                 = 1006
	CloseErrorUnknown             = 4000
	CloseSIDUnknown               = 4001
	CloseSIDInUse                 = 4002
	CloseFailedToConnectToBackend = 4003
	CloseReauthenticationRequired = 4004
	CloseBadAck                   = 4005
	CloseInvalidAck               = 4006
	CloseInvalidWebsocketOpcode   = 4007
	CloseInvalidTag               = 4008
	CloseDestinationWriteFailed   = 4009
	CloseDestinationReadFailed    = 4010
	CloseInvalidData              = 4013
	CloseNotAuthorized            = 4033
	CloseLookupFailed             = 4047
	CloseLookupFailedReconnect    = 4051
	CloseFailedToRewind           = 4074
)

// SourceRange is where IAP's TCP forwarding connects from; the VM's
// firewall must admit it on the tunnelled port.
const SourceRange = "35.235.240.0/20"

// TunnelRole is the IAM role that grants iap.tunnelInstances.accessViaIAP.
const TunnelRole = "roles/iap.tunnelResourceAccessor"

// CloseError is a session ended by IAP with a close code that a retry
// cannot fix. Error gives a sentence a person can act on.
type CloseError struct {
	Code    int
	Reason  string // the relay's reason text, verbatim
	Target  Target
	Account string // the caller's account e-mail, if it told us
}

func (e *CloseError) Error() string {
	t := e.Target
	where := fmt.Sprintf("instance %q (zone %s, project %s)", t.Instance, t.Zone, t.Project)
	tag := fmt.Sprintf(" [%d: %s]", e.Code, e.Reason)
	switch e.Code {
	case CloseNotAuthorized:
		who := "the account"
		if e.Account != "" {
			who = "the account " + e.Account
		}
		return fmt.Sprintf("IAP denied the tunnel to %s: %s needs the role %s (IAP-secured Tunnel User) on the project or the instance, and any IAM condition or access level on it must be met%s",
			where, who, TunnelRole, tag)
	case CloseFailedToConnectToBackend:
		return fmt.Sprintf("IAP could not connect to port %d of %s: the VPC firewall must allow ingress from %s on TCP port %d, the instance must be running, and the service on that port (sshd for SSH) must be up%s",
			t.Port, where, SourceRange, t.Port, tag)
	case CloseLookupFailed, CloseLookupFailedReconnect:
		return fmt.Sprintf("IAP found no %s with interface %s, or the account cannot see it: check the instance name, zone and project%s",
			where, t.iface(), tag)
	case CloseSIDUnknown, CloseSIDInUse, CloseFailedToRewind:
		return fmt.Sprintf("the IAP tunnel to %s was lost and cannot be resumed; open a new connection%s", where, tag)
	case CloseReauthenticationRequired:
		return fmt.Sprintf("IAP asked for reauthentication on the tunnel to %s and no fresh access token was accepted; check the credentials%s", where, tag)
	case CloseBadAck, CloseInvalidAck, CloseInvalidWebsocketOpcode, CloseInvalidTag, CloseInvalidData:
		return fmt.Sprintf("IAP rejected the tunnel client's data to %s as a protocol error; this is a bug in the client%s", where, tag)
	}
	return fmt.Sprintf("IAP closed the tunnel to %s%s", where, tag)
}

// HandshakeError is an HTTP answer instead of the WebSocket upgrade.
type HandshakeError struct {
	Status int
	Body   string // at most the first KiB, trimmed
}

func (e *HandshakeError) Error() string {
	status := fmt.Sprintf("HTTP %d %s", e.Status, http.StatusText(e.Status))
	var s string
	switch {
	case e.Status == http.StatusUnauthorized:
		s = fmt.Sprintf("IAP rejected the access token (%s): the credentials are invalid or expired, or lack the cloud-platform scope", status)
	case e.Status == http.StatusForbidden:
		s = fmt.Sprintf("the WebSocket upgrade to IAP was refused (%s): a corporate proxy or firewall may be blocking WebSockets to tunnel.cloudproxy.app, or the IAP API is not enabled for the project", status)
	case e.Status == http.StatusNotFound:
		s = fmt.Sprintf("the IAP tunnel endpoint was not found (%s): check the relay URL", status)
	case e.Status == http.StatusTooManyRequests || e.Status >= 500:
		s = fmt.Sprintf("IAP is unavailable (%s); try again later", status)
	default:
		s = fmt.Sprintf("the WebSocket upgrade to IAP failed (%s)", status)
	}
	if b := strings.TrimSpace(e.Body); b != "" {
		s += ": " + b
	}
	return s
}

// ProtocolError is a relay message that breaks protocol v4 (an ACK going
// backwards or beyond what was sent, DATA before the session id, ...).
type ProtocolError struct{ Msg string }

func (e *ProtocolError) Error() string { return "IAP relay protocol violation: " + e.Msg }

// errTimeout is the deadline error net.Conn users test with os.ErrDeadlineExceeded.
var errConnectTimeout = errors.New("timed out waiting for IAP to open the tunnel: the instance may be unreachable from IAP (stopped, or the firewall drops " + SourceRange + ")")

// fatalCode reports whether a close code ends the session for good (as
// opposed to a drop or 4004, which are resumed, and 1000/4009/4010, which
// are the far end closing).
func isEOFCode(code int) bool {
	return code == CloseNormal || code == CloseDestinationWriteFailed || code == CloseDestinationReadFailed
}

func isResumableCode(code int) bool {
	return code == -1 || code == CloseAbnormal || code == CloseReauthenticationRequired
}
