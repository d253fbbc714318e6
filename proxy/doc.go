// Package proxy connects ssh to Compute Engine instances the way
// `gcloud compute ssh` does, without gcloud: by name, to the external
// address when there is one, otherwise through IAP.
//
// The work happens in the long-lived agent. A [Service] holds the
// destination cache (instance records and host keys, for a bounded time),
// the agent's token source and the IAP dialer, and answers the agent's
// destination extensions (agent.Destinations): a lookup returns an
// instance record and host keys; a dial opens the connection and returns a
// descriptor, the TCP socket itself for a direct connection or one end of
// a socketpair that the Service relays to the IAP tunnel. The helpers that
// ssh starts (`oslogin-agent proxy`, `known-hosts`, `tunnel`) ask the agent
// with [Call] and, with ProxyUseFdpass, hand the descriptor on to ssh
// ([PassToSSH]) and exit. No credential crosses the agent socket: the
// helper receives a connection, never a token.
//
// When no agent answers, a helper runs a Service of its own over its own
// credentials: slower (a token fetch and lookups per connection), correct.
//
// Tunnel traffic never shares a goroutine or a lock with signing: each
// relayed tunnel has its own goroutines, bounded buffers (the socket's and
// iaptunnel's), and ends with the Service.
package proxy
