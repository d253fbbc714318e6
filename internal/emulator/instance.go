package emulator

import (
	"fmt"
	"maps"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// Instance is one Compute Engine VM of the emulated project: what the
// Compute API reports for it, what its metadata server serves, and the IAM
// bindings granted on it. Its addresses are loopback addresses, so a test
// reaches "the VM" (a throwaway sshd) on this machine.
type Instance struct {
	Name string `json:"name"`
	// Zone defaults to Config.Zone.
	Zone string `json:"zone,omitempty"`
	// ID is the numeric instance id; derived stably from project and name
	// when empty, so it survives restarts but not a rename (as on GCE, where
	// a recreated VM gets a new id).
	ID string `json:"id,omitempty"`
	// Status is Compute's lifecycle state; RUNNING when empty.
	Status string `json:"status,omitempty"`
	// NetworkIP is nic0's internal address; 127.0.0.1 when empty. It must be
	// a loopback address: the relay dials it.
	NetworkIP string `json:"networkIP,omitempty"`
	// NatIP is nic0's external address (accessConfigs[0]); empty means the
	// VM has no external address. Loopback only.
	NatIP string `json:"natIP,omitempty"`
	// ServiceAccount is the attached service account's e-mail. Empty means
	// the project's first account when it is a service account (the
	// emulator's historical "attached" account); NoServiceAccount detaches.
	ServiceAccount   string   `json:"serviceAccount,omitempty"`
	NoServiceAccount bool     `json:"noServiceAccount,omitempty"`
	Scopes           []string `json:"scopes,omitempty"` // access scopes; cloud-platform when empty
	// Metadata holds instance metadata items (enable-oslogin,
	// enable-oslogin-certificates, enable-guest-attributes, ...). They win
	// over the project's commonInstanceMetadata.
	Metadata map[string]string `json:"metadata,omitempty"`
	// Grants are IAM bindings on this instance, by account e-mail. Bindings
	// on the project (Account.Login, ...) apply to every instance as well.
	Grants map[string]InstanceGrant `json:"grants,omitempty"`
}

// InstanceGrant stands for the instance-level roles the emulator knows.
type InstanceGrant struct {
	Login      bool `json:"login,omitempty"`      // roles/compute.osLogin
	AdminLogin bool `json:"adminLogin,omitempty"` // roles/compute.osAdminLogin (implies Login)
	IAPTunnel  bool `json:"iapTunnel,omitempty"`  // roles/iap.tunnelResourceAccessor (iap.tunnelInstances.accessViaIAP)
}

// Metadata keys the emulator's faces act on.
const (
	MetaEnableOSLogin      = "enable-oslogin"
	MetaEnableCertificates = "enable-oslogin-certificates"
	MetaEnableGuestAttrs   = "enable-guest-attributes"
)

// Instance statuses Compute reports; RUNNING is the only one a VM serves in.
var instanceStatuses = []string{"PROVISIONING", "STAGING", "RUNNING", "STOPPING", "STOPPED",
	"SUSPENDING", "SUSPENDED", "REPAIRING", "TERMINATED"}

// Compute's resource name rule (RFC 1035 label) and a zone's shape.
var (
	instanceNameRE = regexp.MustCompile(`^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$`)
	zoneRE         = regexp.MustCompile(`^[a-z]+-[a-z]+[0-9]+-[a-z]$`)
	metadataKeyRE  = regexp.MustCompile(`^[a-zA-Z0-9_-]{1,128}$`)
)

// Region is the region of a zone ("us-central1-a" → "us-central1").
func Region(zone string) string {
	if i := strings.LastIndexByte(zone, '-'); i > 0 {
		return zone[:i]
	}
	return zone
}

// MetadataTrue is how Google's guest code and gcloud read a boolean metadata
// item: case-insensitive true (and the other spellings ParseBool takes).
func MetadataTrue(v string) bool {
	b, err := strconv.ParseBool(strings.TrimSpace(v))
	return err == nil && b || strings.EqualFold(strings.TrimSpace(v), "yes")
}

// normalizeInstance fills defaults and validates one instance against the
// project and the (already normalised) accounts.
func normalizeInstance(in Instance, c *Config, accounts []Account) (Instance, error) {
	if !instanceNameRE.MatchString(in.Name) {
		return in, fmt.Errorf("instance %q: name must be 1-63 lowercase letters, digits or hyphens, starting with a letter", in.Name)
	}
	if in.Zone == "" {
		in.Zone = c.Zone
	}
	if !zoneRE.MatchString(in.Zone) {
		return in, fmt.Errorf("instance %s: invalid zone %q", in.Name, in.Zone)
	}
	if in.ID == "" {
		in.ID = derivedDigits("instance-id:"+c.ProjectID+"/"+in.Name, 19)
	}
	if !isDigits(in.ID) || len(in.ID) > 20 || in.ID[0] == '0' {
		return in, fmt.Errorf("instance %s: id %q is not a Compute id (1-20 digits)", in.Name, in.ID)
	}
	if in.Status == "" {
		in.Status = "RUNNING"
	}
	in.Status = strings.ToUpper(in.Status)
	if !slices.Contains(instanceStatuses, in.Status) {
		return in, fmt.Errorf("instance %s: unknown status %q (want one of %s)", in.Name, in.Status, strings.Join(instanceStatuses, ", "))
	}
	if in.NetworkIP == "" {
		in.NetworkIP = "127.0.0.1"
	}
	for _, a := range []struct{ field, ip string }{{"networkIP", in.NetworkIP}, {"natIP", in.NatIP}} {
		if a.ip == "" {
			continue
		}
		if ip := net.ParseIP(a.ip); ip == nil || !ip.IsLoopback() {
			return in, fmt.Errorf("instance %s: %s %q must be a loopback address: the emulator never reaches beyond this machine", in.Name, a.field, a.ip)
		}
	}
	switch {
	case in.NoServiceAccount:
		in.ServiceAccount = ""
	case in.ServiceAccount == "":
		if len(accounts) > 0 && accounts[0].ServiceAccount {
			in.ServiceAccount = accounts[0].Email
		} else {
			in.NoServiceAccount = true
		}
	default:
		a := findAccount(accounts, in.ServiceAccount)
		if a == nil || !a.ServiceAccount {
			return in, fmt.Errorf("instance %s: attached service account %q is not a configured service account", in.Name, in.ServiceAccount)
		}
		in.ServiceAccount = a.Email
	}
	if len(in.Scopes) == 0 {
		in.Scopes = []string{ScopeCloudPlatform}
	}
	in.Scopes = slices.Clone(in.Scopes)
	for k := range in.Metadata {
		if !metadataKeyRE.MatchString(k) {
			return in, fmt.Errorf("instance %s: invalid metadata key %q", in.Name, k)
		}
	}
	in.Metadata = maps.Clone(in.Metadata)
	grants := make(map[string]InstanceGrant, len(in.Grants))
	for email, g := range in.Grants {
		a := findAccount(accounts, email)
		if a == nil {
			return in, fmt.Errorf("instance %s: grant for unknown account %q", in.Name, email)
		}
		if g.AdminLogin {
			g.Login = true
		}
		grants[a.Email] = g
	}
	in.Grants = grants
	return in, nil
}

func findAccount(accounts []Account, email string) *Account {
	for i := range accounts {
		if strings.EqualFold(accounts[i].Email, email) {
			return &accounts[i]
		}
	}
	return nil
}

// checkUniqueInstances refuses two instances with one name in a zone or one id.
func checkUniqueInstances(list []Instance) error {
	seen := map[string]string{}
	for _, in := range list {
		for _, k := range []string{"name " + in.Zone + "/" + in.Name, "id " + in.ID} {
			if prev, ok := seen[k]; ok {
				return fmt.Errorf("instance %s: %s already used by instance %s", in.Name, k, prev)
			}
			seen[k] = in.Name
		}
	}
	return nil
}

// GuestAttribute is one value a VM wrote to its guest attributes.
type GuestAttribute struct {
	Namespace string `json:"namespace"`
	Key       string `json:"key"`
	Value     string `json:"value"`
}

// InstanceState is an instance with what its guest wrote.
type InstanceState struct {
	Instance
	GuestAttributes []GuestAttribute `json:"guestAttributes,omitempty"`
}

// instance is the mutable state behind one Instance; guarded by Emulator.mu.
type instance struct {
	Instance
	created    string           // RFC 3339 creationTimestamp, Compute's format
	guestAttrs []GuestAttribute // in write order; one entry per namespace/key
}

func (in *instance) snapshot() InstanceState {
	s := InstanceState{Instance: in.Instance, GuestAttributes: slices.Clone(in.guestAttrs)}
	s.Scopes = slices.Clone(in.Scopes)
	s.Metadata = maps.Clone(in.Metadata)
	s.Grants = maps.Clone(in.Grants)
	return s
}

// putGuestAttr stores namespace/key = value, replacing an earlier value.
func (in *instance) putGuestAttr(ns, key, value string) {
	for i := range in.guestAttrs {
		if in.guestAttrs[i].Namespace == ns && in.guestAttrs[i].Key == key {
			in.guestAttrs[i].Value = value
			return
		}
	}
	in.guestAttrs = append(in.guestAttrs, GuestAttribute{Namespace: ns, Key: key, Value: value})
}
