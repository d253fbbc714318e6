// Package iaptunnel owns the IAP TCP forwarding client, protocol v4: it
// opens a TCP stream to a port of a Compute Engine VM through
// Identity-Aware Proxy the way `gcloud compute start-iap-tunnel` does, with
// no gcloud.
//
// The wire protocol is a WebSocket subprotocol (relay.tunnel.cloudproxy.app)
// carrying one frame per binary message: CONNECT_SUCCESS_SID,
// RECONNECT_SUCCESS_ACK, DATA (at most 16 KiB) and ACK (an absolute byte
// count). Because IAP resumes a session on a new WebSocket, a [Conn] keeps
// every byte it wrote until the relay acknowledges it and resends what the
// relay lost after a drop; a dropped WebSocket or an expired token (close
// code 4004) is therefore invisible to the caller. Close codes that end a
// session become [*CloseError] values whose messages say what to fix (IAM
// role, firewall, instance name), because users routinely confuse them.
//
// [Dial] returns a net.Conn, [Serve] pumps it to stdin/stdout for an
// OpenSSH ProxyCommand, and [ListenAndForward] is the local-port mode.
// The package depends only on the standard library, coder/websocket and
// golang.org/x/oauth2, so any Go program can import it.
package iaptunnel
