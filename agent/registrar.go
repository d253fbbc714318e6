package agent

import (
	"context"
	"time"
)

// Registrar publishes the agent's public keys where the login servers look
// for them (OS Login, in production) and withdraws them again. The agent
// speaks only in authorized_keys lines so that it needs to know nothing about
// the service behind the interface; package oslogin implements it.
//
// Every method is called with the exact line the agent built, without a
// trailing newline. Implementations must be safe for concurrent use.
type Registrar interface {
	// Register publishes authorizedKey until expiry and returns the POSIX
	// username that logins with it must use. It returns only once the key is
	// really stored: a call that "succeeds" without storing the key is an error.
	Register(ctx context.Context, authorizedKey string, expiry time.Time) (username string, err error)
	// Extend moves the expiry of an already registered key. The key itself,
	// and so its identity on the login servers, does not change. If the key
	// is not registered (any more), Extend must not import it again (an
	// admin may have deleted it on purpose) but return an error wrapping
	// fs.ErrNotExist; the agent then replaces the key with a fresh one.
	Extend(ctx context.Context, authorizedKey string, expiry time.Time) error
	// Revoke withdraws the key. A key that is already gone is not an error.
	Revoke(ctx context.Context, authorizedKey string) error
}
