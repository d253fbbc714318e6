// Package iaprelay owns the IAP TCP forwarding relay face of the emulator:
// a local stand-in for wss://tunnel.cloudproxy.app, protocol v4, that
// gcloud's `start-iap-tunnel --iap-tunnel-url-override=wss://127.0.0.1:N/v4`
// (gcloud's WebSocket code needs TLS: oslogin-emulator --tls-listen) and
// our own IAP client (ws:// or wss://) can talk to with no cloud.
//
// It follows shared/reference/iap-and-hostkeys.md, part A: the WebSocket
// subprotocol relay.tunnel.cloudproxy.app, Bearer tokens checked before the
// upgrade, the CONNECT_SUCCESS_SID / RECONNECT_SUCCESS_ACK / DATA / ACK
// frames, absolute ACKs both ways, resumable sessions (/v4/reconnect with
// sid and ack, everything after ack resent) and the close codes with their
// reason texts. A session owns the backend TCP connection and outlives a
// dropped WebSocket for a grace period, so a good client loses nothing.
//
// The relay holds no emulator state of its own: accounts, tokens, instances
// and IAM come through [Backend], which the emulator implements with an
// adapter (this package must not import package emulator, which serves it).
// Faults (drops, stalls, refusals, throttling, latency) are set at run time
// so clients can be tested against the failures the real service shows.
package iaprelay
