package iaptunnel

import (
	"errors"
	"log/slog"
	"net/http"
	"time"

	"golang.org/x/oauth2"
)

// DefaultURL is IAP's relay root; /connect and /reconnect are below it.
const DefaultURL = "wss://tunnel.cloudproxy.app/v4"

// Origin is what gcloud sends; IAP expects it (it is not a URL).
const Origin = "bot:iap-tunneler"

// Target is a port on a VM's network interface.
type Target struct {
	Project, Zone, Instance string
	Interface               string // default nic0
	Port                    int
}

func (t Target) iface() string {
	if t.Interface == "" {
		return "nic0"
	}
	return t.Interface
}

func (t Target) validate() error {
	if t.Project == "" || t.Zone == "" || t.Instance == "" {
		return errors.New("the IAP target needs a project, a zone and an instance")
	}
	if t.Port < 1 || t.Port > 65535 {
		return errors.New("the IAP target port must be between 1 and 65535")
	}
	return nil
}

// Options configure Dial. Zero values take the defaults in brackets.
type Options struct {
	// TokenSource yields the OAuth2 access token (cloud-platform scope). A
	// token is taken for every connect and reconnect, so a caching source
	// (oauth2.ReuseTokenSource) refreshes it when IAP asks (close 4004).
	TokenSource oauth2.TokenSource
	URL         string       // relay root [DefaultURL]; tests use ws://127.0.0.1:P/v4
	HTTPClient  *http.Client // for the upgrade [http.DefaultClient, which honours HTTPS_PROXY]
	UserAgent   string       // [oslogin-agent-iaptunnel]
	Logger      *slog.Logger // [discard]
	// Account is the caller's e-mail, named in a not-authorized error.
	Account string
	// ConnectTimeout bounds the upgrade plus the wait for the session id;
	// IAP hangs rather than fails when the backend does not answer [30s].
	ConnectTimeout time.Duration
	// ReconnectWindow is how long to keep trying to resume a dropped
	// session before failing it [2m].
	ReconnectWindow time.Duration
	// CloseTimeout bounds how long Close waits for written bytes to go out
	// before it sends the close frame [10s, like gcloud].
	CloseTimeout time.Duration
	// MaxUnacked bounds the bytes kept for resending; Write blocks while it
	// is full [1 MiB]. MaxBuffered bounds received bytes not yet Read;
	// reading from IAP pauses while it is full [1 MiB].
	MaxUnacked, MaxBuffered int
	// AckFlush sends a pending ACK smaller than the 32 KiB threshold after
	// this idle time [1s].
	AckFlush time.Duration
}

func (o *Options) defaults() error {
	if o.TokenSource == nil {
		return errors.New("IAP tunnel options need a token source")
	}
	if o.URL == "" {
		o.URL = DefaultURL
	}
	if o.HTTPClient == nil {
		o.HTTPClient = http.DefaultClient
	}
	if o.UserAgent == "" {
		o.UserAgent = "oslogin-agent-iaptunnel"
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.ConnectTimeout <= 0 {
		o.ConnectTimeout = 30 * time.Second
	}
	if o.ReconnectWindow <= 0 {
		o.ReconnectWindow = 2 * time.Minute
	}
	if o.CloseTimeout <= 0 {
		o.CloseTimeout = 10 * time.Second
	}
	if o.MaxUnacked <= 0 {
		o.MaxUnacked = 1 << 20
	}
	if o.MaxUnacked < MaxDataLen {
		o.MaxUnacked = MaxDataLen
	}
	if o.MaxBuffered <= 0 {
		o.MaxBuffered = 1 << 20
	}
	if o.AckFlush <= 0 {
		o.AckFlush = time.Second
	}
	return nil
}

// ackThreshold: ACK once more than this was received unacked, as gcloud.
const ackThreshold = 2 * MaxDataLen

// corkBytes is how much the sender gathers into one socket write: four
// full DATA frames, the size of a direct connection's typical write.
const corkBytes = 64 << 10

// readLimit admits the largest legal frame with room to spare.
const readLimit = 64 << 10
