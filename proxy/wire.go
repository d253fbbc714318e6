package proxy

import "github.com/oslogin-agent/oslogin-agent/destination"

// Route is how a dial reaches the instance.
type Route string

// Routes. RouteAuto is the external address when the instance has one,
// else IAP, as `gcloud compute ssh` chooses.
const (
	RouteAuto     Route = ""
	RouteExternal Route = "external"
	RouteInternal Route = "internal"
	RouteIAP      Route = "iap"
)

// LookupRequest asks for an instance record and, with HostKeys, its
// verified host keys. Name is as ssh or the user wrote it; Project and Zone
// fill what it does not say.
type LookupRequest struct {
	Name     string `json:"name"`
	Project  string `json:"project,omitempty"`
	Zone     string `json:"zone,omitempty"`
	HostKeys bool   `json:"hostKeys,omitempty"`
}

// LookupReply is the answer; Error is a sentence for the user when the
// destination could not be looked up.
type LookupReply struct {
	Instance *destination.Instance `json:"instance,omitempty"`
	HostKeys []string              `json:"hostKeys,omitempty"` // "TYPE BASE64", verified
	Error    string                `json:"error,omitempty"`
}

// DialRequest asks for a connection to Port of the instance Name.
type DialRequest struct {
	Name    string `json:"name"`
	Project string `json:"project,omitempty"`
	Zone    string `json:"zone,omitempty"`
	Port    int    `json:"port"`
	Route   Route  `json:"route,omitempty"`
}

// DialReply says how the connection was made, or why it was not; with no
// Error, a descriptor of the connection comes with it.
type DialReply struct {
	Route Route  `json:"route,omitempty"`
	Addr  string `json:"addr,omitempty"` // host:port for direct routes
	Error string `json:"error,omitempty"`
}
