package oslogin

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"time"
)

// Backoff says how hard to retry a failed call. A call itself makes one
// attempt (as Google's generated client did); the Client retries.
type Backoff struct {
	Initial time.Duration // first delay; default 200ms
	Max     time.Duration // cap on one delay; default 30s
	// Attempts caps the attempts per call, the first included; 0 means no
	// cap. The caller's context is what bounds a call: a cap of its own
	// would give up before a long deadline (--start-timeout) and outlive
	// a short one.
	Attempts int
}

func (b Backoff) withDefaults() Backoff {
	if b.Initial <= 0 {
		b.Initial = 200 * time.Millisecond
	}
	if b.Max <= 0 {
		b.Max = 30 * time.Second
	}
	return b
}

// delay is the wait before attempt n+1 (n ≥ 1): exponential with full
// jitter, so that many agents failing together do not retry in step.
func (b Backoff) delay(n int) time.Duration {
	d := b.Initial << min(n-1, 20)
	if d <= 0 || d > b.Max {
		d = b.Max
	}
	return d/2 + rand.N(d/2+1)
}

// definite tells whether a failed attempt certainly changed nothing at OS
// Login: the server refused it (4xx, or 429 and 503, which Google answers
// before doing anything), or no connection was made. A timeout, a dropped
// connection or another 5xx may come after the change was made.
func definite(err error) bool {
	var gerr *apiError
	if errors.As(err, &gerr) {
		c := gerr.Code
		return (c >= 400 && c < 500 && c != http.StatusRequestTimeout) || c == http.StatusServiceUnavailable
	}
	var oerr *net.OpError
	return errors.As(err, &oerr) && oerr.Op == "dial"
}

// isUnauthenticated reports a 401: the token was refused.
func isUnauthenticated(err error) bool {
	var gerr *apiError
	return errors.As(err, &gerr) && gerr.Code == http.StatusUnauthorized
}

// retryable tells whether err is worth another attempt and how long the
// server asked us to wait. 408, 429 and 5xx are, as are transport failures;
// 400, 401, 403 and 404 never are: repeating them changes nothing.
func retryable(err error) (bool, time.Duration) {
	var gerr *apiError
	if errors.As(err, &gerr) {
		switch gerr.Code {
		case http.StatusRequestTimeout, http.StatusTooManyRequests,
			http.StatusInternalServerError, http.StatusBadGateway,
			http.StatusServiceUnavailable, http.StatusGatewayTimeout:
			return true, retryAfter(gerr.Header)
		}
		return false, 0
	}
	// Not an HTTP answer: a refused or dropped connection, or one attempt
	// running out of time. The caller checks its own context separately.
	return true, 0
}

// retryAfter reads a Retry-After header in either of its two forms.
func retryAfter(h http.Header) time.Duration {
	v := h.Get("Retry-After")
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(v); err == nil && s >= 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return time.Until(t)
	}
	return 0
}

// sleep waits d or until ctx is done, whichever comes first.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
