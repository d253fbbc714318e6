package oslogin

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"time"
)

// EmulatorHostEnv names the one variable that points the agent and every
// helper at oslogin-emulator, like PUBSUB_EMULATOR_HOST does for Pub/Sub.
// While it is set, nothing may be sent beyond loopback.
const EmulatorHostEnv = "OSLOGIN_EMULATOR_HOST"

// MetadataHostEnv is the variable Google's client libraries read for the
// metadata server's host:port.
const MetadataHostEnv = "GCE_METADATA_HOST"

// Google's service addresses, used when no emulator is named.
const (
	DefaultOSLoginURL  = "https://oslogin.googleapis.com/"
	DefaultComputeURL  = "https://compute.googleapis.com/compute/v1/"
	DefaultIAPRelayURL = "wss://tunnel.cloudproxy.app/v4"
)

// Endpoints are every address the agent and its helpers talk to, decided in
// one place from the command line and the environment. Clients take their
// base URL from here, never from a constant of their own.
type Endpoints struct {
	// MetadataHost is the metadata server's host:port; empty means the
	// client libraries' default (GCE_METADATA_HOST, or the real one).
	MetadataHost string
	OSLogin      string // OS Login API base URL, ending in "/"
	Compute      string // Compute Engine API base URL, ending in "/compute/v1/"
	IAPRelay     string // IAP TCP forwarding relay, "…/v4"
	TokenInfo    string // asked for the e-mail of user credentials
	// Emulator is OSLOGIN_EMULATOR_HOST when it is set. Then every field
	// above points at loopback and HTTPTransport refuses anything else.
	Emulator string
}

// EndpointOverrides are explicit choices, from flags; they win over
// OSLOGIN_EMULATOR_HOST but must stay on loopback while it is set.
type EndpointOverrides struct {
	OSLogin   string // --endpoint
	TokenInfo string // --tokeninfo-url
}

// EndpointError is a bad endpoint setting: the user has to change a flag or
// a variable.
type EndpointError struct{ msg string }

func (e *EndpointError) Error() string { return e.msg }

// ResolveEndpoints works out the endpoints from explicit overrides and the
// environment (getenv, usually os.Getenv).
func ResolveEndpoints(o EndpointOverrides, getenv func(string) string) (Endpoints, error) {
	e := Endpoints{
		MetadataHost: getenv(MetadataHostEnv),
		OSLogin:      DefaultOSLoginURL,
		Compute:      DefaultComputeURL,
		IAPRelay:     DefaultIAPRelayURL,
		TokenInfo:    DefaultTokenInfoURL,
	}
	if emu := strings.TrimSpace(getenv(EmulatorHostEnv)); emu != "" {
		host, port, err := net.SplitHostPort(emu)
		if err != nil || port == "" || !isLoopbackHost(host) {
			return Endpoints{}, &EndpointError{fmt.Sprintf("%s=%q is not a loopback host:port; set it to the "+
				"address oslogin-emulator printed, such as 127.0.0.1:41234", EmulatorHostEnv, emu)}
		}
		e = Endpoints{
			MetadataHost: emu,
			OSLogin:      "http://" + emu + "/",
			Compute:      "http://" + emu + "/compute/v1/",
			IAPRelay:     "ws://" + emu + "/v4",
			TokenInfo:    "http://" + emu + "/tokeninfo",
			Emulator:     emu,
		}
	}
	if e.Emulator == "" && o.OSLogin == "" && e.MetadataHost != "" {
		// The old two-setting way to use the emulator, half done: its
		// metadata server would hand out a token, and OS Login would be
		// Google's, which is where that token would go.
		if host, _, err := net.SplitHostPort(e.MetadataHost); err == nil && isLoopbackHost(host) {
			return Endpoints{}, &EndpointError{fmt.Sprintf("%s=%s is on this machine, like oslogin-emulator's, but "+
				"OS Login would be Google's, so a local token would be sent to Google; set %s=%s instead "+
				"(or pass --endpoint to name the OS Login API)", MetadataHostEnv, e.MetadataHost, EmulatorHostEnv, e.MetadataHost)}
		}
	}
	for _, ov := range []struct {
		flag, raw string
		dst       *string
	}{
		{"--endpoint", o.OSLogin, &e.OSLogin},
		{"--tokeninfo-url", o.TokenInfo, &e.TokenInfo},
	} {
		if ov.raw == "" {
			continue
		}
		u, err := parseHTTPURL(ov.raw)
		if err != nil {
			return Endpoints{}, &EndpointError{fmt.Sprintf("%s %q %v", ov.flag, ov.raw, err)}
		}
		if e.Emulator != "" && !isLoopbackHost(u.Hostname()) {
			return Endpoints{}, &EndpointError{fmt.Sprintf("%s %q is not on this machine, but %s is set, so nothing "+
				"may leave it; unset %s to use a remote endpoint", ov.flag, ov.raw, EmulatorHostEnv, EmulatorHostEnv)}
		}
		*ov.dst = u.String()
	}
	if !strings.HasSuffix(e.OSLogin, "/") {
		e.OSLogin += "/"
	}
	return e, nil
}

// parseHTTPURL accepts an absolute http or https URL with a host and
// nothing after the path.
func parseHTTPURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		return nil, errors.New("is not a URL; give one like https://oslogin.googleapis.com/")
	case u.Scheme != "http" && u.Scheme != "https":
		return nil, errors.New("is not an http:// or https:// URL; give one like https://oslogin.googleapis.com/")
	case u.Host == "" || u.Hostname() == "":
		return nil, errors.New("names no host; give one like https://oslogin.googleapis.com/")
	case u.User != nil || u.RawQuery != "" || u.Fragment != "":
		return nil, errors.New("must be a plain base URL, without user, query or fragment")
	}
	return u, nil
}

// LoopbackOnly reports whether nothing may leave this machine.
func (e Endpoints) LoopbackOnly() bool { return e.Emulator != "" }

// HTTPTransport is the base transport for every HTTP client the agent
// makes. With the emulator set it uses no proxy and refuses, before any
// name lookup, every address that is not loopback.
func (e Endpoints) HTTPTransport() *http.Transport {
	d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	t := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           d.DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConnsPerHost:   4,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: defaultCallTimeout,
	}
	if e.LoopbackOnly() {
		t.Proxy = nil
		d.Control = func(_, address string, _ syscall.RawConn) error {
			host, _, _ := net.SplitHostPort(address)
			if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
				return errNotLoopback(host)
			}
			return nil
		}
		t.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
			host, _, err := net.SplitHostPort(addr)
			if err != nil {
				return nil, err
			}
			if !isLoopbackHost(host) {
				return nil, errNotLoopback(host) // refused before DNS: no lookup leaves either
			}
			return d.DialContext(ctx, network, addr)
		}
	}
	return t
}

// HTTPClient is a plain client over HTTPTransport with an overall timeout.
func (e Endpoints) HTTPClient() *http.Client {
	return &http.Client{Transport: e.HTTPTransport(), Timeout: defaultCallTimeout}
}

// ErrNotLoopback marks a connection refused because OSLOGIN_EMULATOR_HOST
// is set and the address is not on this machine.
var ErrNotLoopback = errors.New("refused to connect beyond this machine")

func errNotLoopback(host string) error {
	return fmt.Errorf("%w: %s is set, and %s is not loopback (a credentials file or setting still names a "+
		"real Google service)", ErrNotLoopback, EmulatorHostEnv, host)
}

// isLoopbackHost accepts "localhost" and loopback IP literals, so that the
// check needs no name lookup.
func isLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip != nil && ip.IsLoopback()
}
