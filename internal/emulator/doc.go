// Package emulator is a local stand-in for the Google services an OS
// Login client meets: the OS Login API v1 (oslogin.googleapis.com), the
// read side of the Compute Engine API v1 (compute.googleapis.com), the GCE
// metadata server (including its OAuth token and the VM-side OS Login
// endpoints the guest's NSS/PAM/sshd helpers call) and Google's OAuth token
// endpoint for service-account key files. Everything this project promises is
// checked offline against it, so it follows the wire contract in
// shared/reference/oslogin-contract.md to the byte: paths with unescaped
// e-mails, int64 as JSON strings, the SHA-256 fingerprint rule, Google's error
// envelope and texts, and the guest's pagination and expiry rules.
//
// One [Emulator] owns one state (accounts, POSIX accounts and groups, SSH
// keys, the project's Compute Engine instances with their metadata, IAM
// bindings and guest attributes, issued tokens, call counters, faults, quota
// windows, a clock offset) and serves it through a single [http.Handler]:
//
//	/v1/...                 OS Login API v1 (Bearer tokens required), including
//	                        projects.locations.signSshPublicKey, signed by the
//	                        emulator's in-memory OS Login CA
//	/compute/v1/projects/...
//	                        Compute Engine API v1 subset: instances.get, list,
//	                        aggregatedList, getGuestAttributes, projects.get
//	                        (Bearer tokens, compute.viewer: Account.ComputeViewer)
//	/token                  OAuth 2.0 JWT-bearer grant for service-account keys
//	/ and /computeMetadata/v1/...
//	                        metadata server of each instance (see [InstanceHeader]),
//	                        incl. oslogin/users, oslogin/groups, oslogin/authorize
//	                        (fingerprint= for certificates), oslogin/certificates
//	                        and guest attributes
//	/v4/connect, /v4/reconnect
//	                        IAP TCP forwarding relay, protocol v4 (package iaprelay):
//	                        tunnels to an instance's nic0 address on loopback for
//	                        accounts with the IAP tunnel role
//	/emulator/v1/...        admin API (no auth, loopback callers only)
//
// Time comes from an injectable [Clock] plus an offset that [Emulator.Advance]
// (or the admin API) moves forward, so expiry, purge delays, token lifetimes
// and quota windows are testable without sleeping.
//
// The package also holds the client side used by tests and tools: [AdminClient]
// for a separately running emulator, [AuthorizedKeys], the logic of the
// sshd AuthorizedKeysCommand that plays the VM's guest agent, and for VMs
// that trust OS Login certificates [AuthorizedPrincipals] (sshd's
// AuthorizedPrincipalsCommand) and [TrustedCAKeys] (its TrustedUserCAKeys).
package emulator
