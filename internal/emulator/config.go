package emulator

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"maps"
	"math/big"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"
)

// OAuth scopes the OS Login API distinguishes (contract section 5).
const (
	ScopeCloudPlatform         = "https://www.googleapis.com/auth/cloud-platform"
	ScopeCloudPlatformReadOnly = "https://www.googleapis.com/auth/cloud-platform.read-only"
	ScopeCompute               = "https://www.googleapis.com/auth/compute"
	ScopeComputeReadOnly       = "https://www.googleapis.com/auth/compute.readonly"
)

// Defaults used when a Config leaves a field empty.
const (
	DefaultProjectID     = "emulator-project"
	DefaultZone          = "us-central1-a"
	DefaultInstanceName  = "emulator-vm"
	DefaultProfileLimit  = 32 * 1024
	DefaultPurgeDelay    = 5 * time.Minute
	DefaultTokenLifetime = time.Hour
)

// maxUID keeps derived uids inside [1000, 2^32-2]: 2^32-1 is (uid_t)-1.
const maxUID = 1<<32 - 2

// usernameRE is the guest's rule (oslogin_utils.cc kUserNameRegex); custom
// usernames must pass it or the VM could never look them up.
var usernameRE = regexp.MustCompile(`^[a-zA-Z0-9._][a-zA-Z0-9._-]{0,31}$`)

// Account is one Google identity known to the emulator. Login and AdminLogin
// stand for the IAM roles roles/compute.osLogin and roles/compute.osAdminLogin
// on the emulated VM; AdminLogin implies Login.
type Account struct {
	Email string `json:"email"`
	// UniqueID is the numeric id used as LoginProfile.name and in sa_<id>
	// usernames; 21 digits derived stably from the e-mail when empty.
	UniqueID string `json:"uniqueId,omitempty"`
	// ServiceAccount is implied for e-mails ending in .gserviceaccount.com.
	ServiceAccount bool `json:"serviceAccount,omitempty"`
	// Username is a custom POSIX username, as a Workspace admin could set one.
	Username   string `json:"username,omitempty"`
	Login      bool   `json:"login,omitempty"`
	AdminLogin bool   `json:"adminLogin,omitempty"`
	// UID is the POSIX uid (= gid); derived stably in [1000, 2^32) when 0.
	UID int64 `json:"uid,omitempty"`
	// TokenCreators may mint tokens for this account through the IAM
	// Credentials API (roles/iam.serviceAccountTokenCreator on it).
	TokenCreators []string `json:"tokenCreators,omitempty"`
	// ComputeViewer stands for roles/compute.viewer on the project: it lets
	// the account read instances, the project and guest attributes through
	// the Compute API.
	ComputeViewer bool `json:"computeViewer,omitempty"`
	// IAPTunnel stands for roles/iap.tunnelResourceAccessor on the project
	// (iap.tunnelInstances.accessViaIAP on every instance).
	IAPTunnel bool `json:"iapTunnel,omitempty"`
	// ServiceAccountUsers may act as this service account
	// (roles/iam.serviceAccountUser on it, iam.serviceAccounts.actAs):
	// signSshPublicKey for an instance it is attached to needs that. A
	// service account may always act as itself.
	ServiceAccountUsers []string `json:"serviceAccountUsers,omitempty"`
}

// Config describes the emulated project, its VMs and identities. Zero fields
// take the defaults of DefaultConfig, so Config{} is a working configuration.
type Config struct {
	ProjectID     string
	ProjectNumber string // derived stably from ProjectID when empty
	// Zone is the default zone of instances.
	Zone string
	// InstanceName is the default instance: the VM the metadata server
	// speaks as when a request does not name one. When Instances does not
	// hold it, it is created from InstanceID, InstanceScopes and the first
	// account.
	InstanceName string
	InstanceID   string // derived stably when empty
	// Instances are the project's VMs (see Instance).
	Instances []Instance
	// ProjectMetadata is the project's commonInstanceMetadata; instance
	// metadata wins over it. Nil means enable-oslogin=TRUE (left out when
	// OSLoginDisabled) and enable-guest-attributes=TRUE, so VMs publish
	// their host keys as the guest agent does.
	ProjectMetadata map[string]string
	// Accounts[0] is the VM's attached ("default") service account when it is
	// a service account. Nil means one service account
	// agent@<ProjectID>.iam.gserviceaccount.com allowed to log in.
	Accounts []Account
	// InstanceScopes are the attached account's access scopes: what a
	// metadata token carries when the caller asks for no scopes. Default
	// cloud-platform.
	InstanceScopes []string
	// PurgeDelay is how long an expired key stays in the profile before the
	// service removes it. Zero means 5 minutes, negative means never; use a
	// nanosecond for "at once".
	PurgeDelay time.Duration
	// ProfileLimit is the maximum sum of stored key lengths in bytes. Zero
	// means 32 KiB, negative means unlimited.
	ProfileLimit int
	// TokenLifetime of issued access tokens; zero means one hour.
	TokenLifetime time.Duration
	// CertificateLifetime is how long a certificate from signSshPublicKey
	// is valid; zero means Google's five minutes. Valid-after is backdated
	// by 30 s.
	CertificateLifetime time.Duration
	// WriteQuotaPerMinute enables the per-user write quota; zero means off.
	WriteQuotaPerMinute int
	// OSLoginDisabled leaves enable-oslogin out of the default project
	// metadata, so the VM-side oslogin/ endpoints and the enable-oslogin
	// attribute answer 404, as on a VM without OS Login.
	OSLoginDisabled bool
	// Groups are the OS Login POSIX groups the VM's NSS module sees; none by
	// default. Members must be accounts of Accounts (see Group).
	Groups []Group
}

// DefaultConfig is what the emulator serves without configuration: project
// "emulator-project", one VM, and one attached service account allowed to
// log in, read instances and tunnel through IAP.
func DefaultConfig() Config {
	c, err := Config{}.normalize()
	if err != nil {
		panic(fmt.Sprintf("emulator: default config invalid: %v", err)) // cannot happen: constants
	}
	// The instance list and project metadata are derived again when the
	// emulator starts, so that a caller changing InstanceScopes or
	// OSLoginDisabled on this value changes the default VM.
	c.Instances, c.ProjectMetadata = nil, nil
	return c
}

// DefaultAccount is the attached service account served when a Config has no
// accounts: agent@<projectID>.iam.gserviceaccount.com, allowed to log in.
func DefaultAccount(projectID string) Account {
	if projectID == "" {
		projectID = DefaultProjectID
	}
	return Account{Email: "agent@" + projectID + ".iam.gserviceaccount.com", ServiceAccount: true, Login: true,
		ComputeViewer: true, IAPTunnel: true}
}

// LoadConfig reads a JSON configuration file; see ParseConfig.
func LoadConfig(path string) (Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("read config: %w", err)
	}
	c, err := ParseConfig(b)
	if err != nil {
		return Config{}, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

// ParseConfig decodes the JSON configuration format. Durations are Go
// duration strings; unknown fields are rejected so typos do not pass silently:
//
//	{"projectId": "p", "projectNumber": "123", "zone": "z", "instanceName": "vm",
//	 "instanceId": "1", "instanceScopes": ["..."], "purgeDelay": "5m",
//	 "profileLimit": 32768, "tokenLifetime": "1h", "writeQuotaPerMinute": 60,
//	 "osLoginDisabled": false,
//	 "projectMetadata": {"enable-oslogin": "TRUE", "enable-guest-attributes": "TRUE"},
//	 "accounts": [{"email": "a@p.iam.gserviceaccount.com", "login": true,
//	               "computeViewer": true, "iapTunnel": true},
//	              {"email": "u@example.com", "username": "u", "adminLogin": true}],
//	 "instances": [{"name": "vm1", "zone": "z", "networkIP": "127.0.0.2",
//	                "natIP": "127.0.0.3", "status": "RUNNING",
//	                "serviceAccount": "a@p.iam.gserviceaccount.com", "scopes": ["..."],
//	                "metadata": {"enable-oslogin-certificates": "TRUE"},
//	                "grants": {"u@example.com": {"login": true, "iapTunnel": true}}}],
//	 "groups": [{"name": "devs", "gid": 5001, "members": ["u@example.com"]}]}
func ParseConfig(b []byte) (Config, error) {
	var f struct {
		ProjectID           string            `json:"projectId"`
		ProjectNumber       string            `json:"projectNumber"`
		Zone                string            `json:"zone"`
		InstanceName        string            `json:"instanceName"`
		InstanceID          string            `json:"instanceId"`
		Accounts            []Account         `json:"accounts"`
		InstanceScopes      []string          `json:"instanceScopes"`
		PurgeDelay          string            `json:"purgeDelay"`
		ProfileLimit        int               `json:"profileLimit"`
		TokenLifetime       string            `json:"tokenLifetime"`
		CertificateLifetime string            `json:"certificateLifetime"`
		WriteQuotaPerMinute int               `json:"writeQuotaPerMinute"`
		OSLoginDisabled     bool              `json:"osLoginDisabled"`
		ProjectMetadata     map[string]string `json:"projectMetadata"`
		Instances           []Instance        `json:"instances"`
		Groups              []Group           `json:"groups"`
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return Config{}, fmt.Errorf("decode: %w", err)
	}
	c := Config{
		ProjectID: f.ProjectID, ProjectNumber: f.ProjectNumber, Zone: f.Zone,
		InstanceName: f.InstanceName, InstanceID: f.InstanceID, Accounts: f.Accounts,
		InstanceScopes: f.InstanceScopes, ProfileLimit: f.ProfileLimit,
		WriteQuotaPerMinute: f.WriteQuotaPerMinute, OSLoginDisabled: f.OSLoginDisabled,
		ProjectMetadata: f.ProjectMetadata, Instances: f.Instances, Groups: f.Groups,
	}
	var err error
	if c.PurgeDelay, err = parseDuration("purgeDelay", f.PurgeDelay); err != nil {
		return Config{}, err
	}
	if c.TokenLifetime, err = parseDuration("tokenLifetime", f.TokenLifetime); err != nil {
		return Config{}, err
	}
	if c.CertificateLifetime, err = parseDuration("certificateLifetime", f.CertificateLifetime); err != nil {
		return Config{}, err
	}
	return c, nil
}

func parseDuration(field, s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", field, err)
	}
	return d, nil
}

// normalize fills defaults, derives ids, usernames and uids, and validates.
// The result is what the emulator serves; it is deterministic for one input.
func (c Config) normalize() (Config, error) {
	if c.ProjectID == "" {
		c.ProjectID = DefaultProjectID
	}
	if strings.ContainsAny(c.ProjectID, "/ ") {
		return c, fmt.Errorf("invalid project id %q", c.ProjectID)
	}
	if c.ProjectNumber == "" {
		c.ProjectNumber = derivedDigits("project-number:"+c.ProjectID, 12)
	}
	if !isDigits(c.ProjectNumber) {
		return c, fmt.Errorf("project number %q is not numeric", c.ProjectNumber)
	}
	if c.Zone == "" {
		c.Zone = DefaultZone
	}
	if c.InstanceName == "" {
		c.InstanceName = DefaultInstanceName
	}
	if len(c.InstanceScopes) == 0 {
		c.InstanceScopes = []string{ScopeCloudPlatform}
	}
	if c.PurgeDelay == 0 {
		c.PurgeDelay = DefaultPurgeDelay
	}
	if c.ProfileLimit == 0 {
		c.ProfileLimit = DefaultProfileLimit
	}
	if c.TokenLifetime <= 0 {
		c.TokenLifetime = DefaultTokenLifetime
	}
	if c.CertificateLifetime <= 0 {
		c.CertificateLifetime = DefaultCertificateLifetime
	}
	if c.WriteQuotaPerMinute < 0 {
		return c, fmt.Errorf("negative write quota %d", c.WriteQuotaPerMinute)
	}
	if c.Accounts == nil {
		c.Accounts = []Account{DefaultAccount(c.ProjectID)}
	}
	in := c.Accounts
	c.Accounts = make([]Account, 0, len(in))
	for _, a := range in {
		n, err := normalizeAccount(a, c.Accounts)
		if err != nil {
			return c, err
		}
		c.Accounts = append(c.Accounts, n)
	}
	var groups []Group // nil when none, like an unconfigured Config
	for _, g := range c.Groups {
		n, err := normalizeGroup(g.clone(), c.Accounts, groups)
		if err != nil {
			return c, err
		}
		groups = append(groups, n)
	}
	c.Groups = groups
	return c.normalizeInstances()
}

// DefaultProjectMetadata is the commonInstanceMetadata of a Config that
// sets none: guest attributes on, so VMs publish host keys as the guest
// agent does, and OS Login on unless osLoginDisabled. Callers that add
// items to the default start from it.
func DefaultProjectMetadata(osLoginDisabled bool) map[string]string {
	md := map[string]string{MetaEnableGuestAttrs: "TRUE"}
	if !osLoginDisabled {
		md[MetaEnableOSLogin] = "TRUE"
	}
	return md
}

// normalizeInstances completes the instance list (the default instance
// first when it is missing), the project metadata, and mirrors the default
// instance into the single-VM fields.
func (c Config) normalizeInstances() (Config, error) {
	if c.ProjectMetadata == nil {
		c.ProjectMetadata = DefaultProjectMetadata(c.OSLoginDisabled)
	} else {
		c.ProjectMetadata = maps.Clone(c.ProjectMetadata)
	}
	for k := range c.ProjectMetadata {
		if !metadataKeyRE.MatchString(k) {
			return c, fmt.Errorf("project metadata: invalid key %q", k)
		}
	}
	in := c.Instances
	c.Instances = make([]Instance, 0, len(in)+1)
	hasDefault := false
	for _, i := range in {
		n, err := normalizeInstance(i, &c, c.Accounts)
		if err != nil {
			return c, err
		}
		hasDefault = hasDefault || n.Name == c.InstanceName && n.Zone == c.Zone
		c.Instances = append(c.Instances, n)
	}
	if !hasDefault {
		if len(in) > 0 && c.InstanceID == "" && c.InstanceName == DefaultInstanceName {
			// Instances were configured and none was named the default:
			// the first one is the VM the metadata server speaks as.
			c.InstanceName, c.Zone = c.Instances[0].Name, c.Instances[0].Zone
		} else {
			d, err := normalizeInstance(Instance{Name: c.InstanceName, ID: c.InstanceID, Scopes: c.InstanceScopes}, &c, c.Accounts)
			if err != nil {
				return c, err
			}
			c.Instances = append([]Instance{d}, c.Instances...)
		}
	}
	if err := checkUniqueInstances(c.Instances); err != nil {
		return c, err
	}
	for _, i := range c.Instances {
		if i.Name == c.InstanceName && i.Zone == c.Zone {
			c.InstanceID, c.InstanceScopes = i.ID, slices.Clone(i.Scopes)
		}
	}
	return c, nil
}

// normalizeAccount derives the missing fields of a and checks it against the
// accounts already present, so every identity, username and uid is unique.
func normalizeAccount(a Account, existing []Account) (Account, error) {
	a.Email = strings.TrimSpace(a.Email)
	if !strings.Contains(a.Email, "@") || strings.ContainsAny(a.Email, "/ \t\r\n") {
		return a, fmt.Errorf("account %q: not an e-mail address", a.Email)
	}
	if strings.HasSuffix(strings.ToLower(a.Email), ".gserviceaccount.com") {
		a.ServiceAccount = true
	}
	if a.UniqueID == "" {
		a.UniqueID = "1" + derivedDigits("unique-id:"+strings.ToLower(a.Email), 20)
	}
	if !isDigits(a.UniqueID) {
		return a, fmt.Errorf("account %s: unique id %q is not numeric", a.Email, a.UniqueID)
	}
	if a.Username != "" && !usernameRE.MatchString(a.Username) {
		return a, fmt.Errorf("account %s: username %q does not match %s", a.Email, a.Username, usernameRE)
	}
	if a.AdminLogin {
		a.Login = true
	}
	if a.UID != 0 && (a.UID < 1000 || a.UID > maxUID) {
		return a, fmt.Errorf("account %s: uid %d outside [1000, %d]", a.Email, a.UID, int64(maxUID))
	}
	taken := make(map[int64]bool, len(existing))
	for _, o := range existing {
		switch {
		case strings.EqualFold(o.Email, a.Email):
			return a, fmt.Errorf("account %s: duplicate e-mail", a.Email)
		case o.UniqueID == a.UniqueID:
			return a, fmt.Errorf("account %s: unique id %s already used by %s", a.Email, a.UniqueID, o.Email)
		case posixUsername(o) == posixUsername(a):
			return a, fmt.Errorf("account %s: username %s already used by %s", a.Email, posixUsername(a), o.Email)
		case a.UID != 0 && o.UID == a.UID:
			return a, fmt.Errorf("account %s: uid %d already used by %s", a.Email, a.UID, o.Email)
		}
		taken[o.UID] = true
	}
	if a.UID == 0 {
		sum := sha256.Sum256([]byte("posix-uid:" + strings.ToLower(a.Email)))
		uid := 1000 + int64(binary.BigEndian.Uint64(sum[:8])%(maxUID-1000+1))
		for taken[uid] {
			uid++
			if uid > maxUID {
				uid = 1000
			}
		}
		a.UID = uid
	}
	return a, nil
}

// posixUsername is Google's rule: the custom username if set, sa_<id> for
// service accounts, else the lower-cased e-mail with every character outside
// [a-z0-9] replaced by '_' (user.name@example.com → user_name_example_com).
func posixUsername(a Account) string {
	if a.Username != "" {
		return a.Username
	}
	if a.ServiceAccount {
		return "sa_" + a.UniqueID
	}
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			return r
		}
		return '_'
	}, strings.ToLower(a.Email))
}

// derivedDigits returns n decimal digits derived from seed, the first non-zero,
// so derived ids look like Google's and never change between runs.
func derivedDigits(seed string, n int) string {
	sum := sha256.Sum256([]byte(seed))
	v := new(big.Int).SetBytes(sum[:])
	limit := new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(n-1)), nil)
	v.Mod(v, new(big.Int).Mul(limit, big.NewInt(9)))
	v.Add(v, limit)
	return v.String()
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}
