package emulator

import (
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net/http"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/oslogin-agent/oslogin-agent/internal/emulator/iaprelay"
)

// Options configure New.
type Options struct {
	Config Config
	Clock  Clock        // nil: real time
	Logger *slog.Logger // nil: discard
	// Rand returns numbers in [0, 1) for fault rates; nil: math/rand/v2.
	// Tests inject a sequence to make rates deterministic.
	Rand func() float64
}

// Emulator is one emulated project with its VM, identities and services.
// All methods are safe for concurrent use.
type Emulator struct {
	cfg     Config // normalised; accounts live in e.accounts
	clock   Clock
	log     *slog.Logger
	rand    func() float64
	handler http.Handler

	closeOnce sync.Once
	closed    chan struct{} // releases stalled and delayed requests
	relay     *iaprelay.Relay

	mu          sync.Mutex
	offset      time.Duration
	accounts    []*account // configuration order; [0] is the attached SA if it is one
	byEmail     map[string]*account
	tokens      map[string]*accessToken
	mdsTokens   map[string]string
	calls       map[string]int
	faults      []Fault
	writeQuota  int
	quota       map[string]*quotaWindow
	refresh     map[string]string      // user refresh token → e-mail
	instances   []*instance            // configuration order, then additions
	projectMeta map[string]string      // commonInstanceMetadata
	ca          ssh.Signer             // OS Login CA; in memory only
	certs       map[string]*issuedCert // by certificate fingerprint
	groups      []Group                // POSIX groups in creation order; members are accounts' e-mails
}

// New builds an emulator from opts; the configuration is validated and
// completed (see Config).
func New(opts Options) (*Emulator, error) {
	cfg, err := opts.Config.normalize()
	if err != nil {
		return nil, fmt.Errorf("emulator config: %w", err)
	}
	e := &Emulator{
		cfg: cfg, clock: opts.Clock, log: opts.Logger, rand: opts.Rand,
		closed:  make(chan struct{}),
		byEmail: map[string]*account{}, tokens: map[string]*accessToken{}, mdsTokens: map[string]string{},
		calls: map[string]int{}, quota: map[string]*quotaWindow{}, writeQuota: cfg.WriteQuotaPerMinute,
		refresh: map[string]string{}, certs: map[string]*issuedCert{},
	}
	if e.ca, err = newCA(); err != nil {
		return nil, fmt.Errorf("emulator: %w", err)
	}
	if e.clock == nil {
		e.clock = realClock{}
	}
	if e.log == nil {
		e.log = slog.New(slog.DiscardHandler)
	}
	if e.rand == nil {
		e.rand = rand.Float64
	}
	for _, a := range cfg.Accounts {
		if _, err := e.addAccountLocked(a); err != nil {
			return nil, fmt.Errorf("emulator config: %w", err)
		}
	}
	e.cfg.Accounts = nil
	now := e.nowLocked().Format(time.RFC3339Nano)
	for _, in := range cfg.Instances {
		e.instances = append(e.instances, &instance{Instance: in, created: now})
	}
	e.projectMeta = cfg.ProjectMetadata
	e.cfg.Instances, e.cfg.ProjectMetadata = nil, nil
	e.groups = cfg.Groups // validated by normalize, against the same accounts
	e.cfg.Groups = nil
	e.relay = iaprelay.New(iaprelay.Options{Backend: relayBackend{e}, Logger: e.log, Rand: e.rand, Now: e.Now})
	e.handler = e.routes()
	return e, nil
}

// Config returns the normalised configuration, with the current accounts,
// groups, instances and project metadata.
func (e *Emulator) Config() Config {
	c := e.cfg
	c.Accounts = e.Accounts()
	c.Groups = e.Groups()
	c.InstanceScopes = append([]string(nil), c.InstanceScopes...)
	for _, in := range e.Instances() {
		c.Instances = append(c.Instances, in.Instance)
	}
	c.ProjectMetadata = e.ProjectMetadata()
	return c
}

// Close releases requests held by stall and latency faults and ends the IAP
// relay's tunnels so that a server can shut down promptly. The emulator
// keeps serving other requests; new tunnels are refused.
func (e *Emulator) Close() {
	e.closeOnce.Do(func() {
		close(e.closed)
		// Tunnels are hijacked connections a server's Shutdown does not
		// wait for; the relay ends them and their backend connections.
		e.relay.Close()
	})
}

// Handler serves all faces of the emulator; see the package documentation.
func (e *Emulator) Handler() http.Handler { return e.handler }

func (e *Emulator) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/", e.serveAPI)
	mux.HandleFunc("/token", e.serveToken)
	mux.HandleFunc("/tokeninfo", e.serveTokenInfo)
	mux.HandleFunc("/v1/projects/-/serviceAccounts/", e.serveGenerateAccessToken)
	mux.HandleFunc("/computeMetadata/", e.serveMetadata)
	mux.Handle("/v4/", e.relay)
	mux.HandleFunc(computePrefix, e.serveCompute)
	mux.HandleFunc("/{$}", e.serveMetadataRoot)
	mux.Handle("/emulator/v1/", loopbackOnly(e.adminRoutes()))
	return e.logRequests(mux)
}

// count records one call of a method, by discovery id or face name.
func (e *Emulator) count(id string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.calls[id]++
}

// Calls returns how often each method was called since the last reset,
// failed and faulted calls included. Keys are discovery ids
// ("users.importSshPublicKey") for the OS Login API and the Compute API
// ("compute.instances.get", "compute.instances.list",
// "compute.instances.aggregatedList", "compute.instances.getGuestAttributes",
// "compute.projects.get"), "metadata.token", "metadata.get",
// "metadata.oslogin.users" (users?groupname= included, as it is the users
// path), "metadata.oslogin.groups", "metadata.oslogin.authorize",
// "metadata.oslogin.certificates" for the metadata server and "oauth2.token"
// for the token endpoint.
func (e *Emulator) Calls() map[string]int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return maps.Clone(e.calls)
}

// ResetCalls zeroes the call counters.
func (e *Emulator) ResetCalls() {
	e.mu.Lock()
	defer e.mu.Unlock()
	clear(e.calls)
}

// statusRecorder remembers the status for the request log; Unwrap keeps
// http.ResponseController (hijack for dropped connections) working.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// logRequests logs every request at debug level; the emulator is quiet
// unless asked.
func (e *Emulator) logRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w}
		defer func() {
			e.log.Debug("request", "method", r.Method, "uri", r.RequestURI, "status", rec.status,
				"duration", time.Since(start), "remote", r.RemoteAddr)
		}()
		next.ServeHTTP(rec, r)
	})
}

// apiMethod is one OS Login API method by discovery id.
type apiMethod struct {
	id    string
	rpc   string // google.cloud.oslogin.v1.OsLoginService method name
	write bool
}

// methodByID describes an OS Login API method by discovery id.
func methodByID(id string) apiMethod {
	rpc, write := id, true
	switch id {
	case "users.getLoginProfile":
		rpc, write = "GetLoginProfile", false
	case "users.sshPublicKeys.get":
		rpc, write = "GetSshPublicKey", false
	case "users.importSshPublicKey":
		rpc = "ImportSshPublicKey"
	case "users.sshPublicKeys.create":
		rpc = "CreateSshPublicKey"
	case "users.sshPublicKeys.patch":
		rpc = "UpdateSshPublicKey"
	case "users.sshPublicKeys.delete":
		rpc = "DeleteSshPublicKey"
	case "users.projects.delete":
		rpc = "DeletePosixAccount"
	case "users.projects.provisionPosixAccount":
		rpc = "ProvisionPosixAccount"
	case methodSign:
		// A write: the server records the certificate's fingerprint.
		rpc = "SignSshPublicKey"
	default:
		write = false
	}
	return apiMethod{id: id, rpc: rpc, write: write}
}

func rpcName(id string) string { return methodByID(id).rpc }
