package emulator

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
)

// ErrUnknownInstance is returned for an instance reference that names no VM.
var ErrUnknownInstance = errors.New("unknown instance")

// Instance lookups, IAM checks and run-time changes. Every face (Compute,
// metadata server, relay, certificate authority) asks these, so a grant or
// a metadata switch changes all of them at once.

// instanceLocked finds an instance by name or numeric id. zone "" matches
// any zone; a name used in several zones then matches none.
func (e *Emulator) instanceLocked(zone, ref string) *instance {
	var found *instance
	for _, in := range e.instances {
		if zone != "" && in.Zone != zone {
			continue
		}
		if in.ID == ref {
			return in
		}
		if in.Name == ref {
			if found != nil {
				return nil
			}
			found = in
		}
	}
	return found
}

// defaultInstanceLocked is the VM the metadata server speaks as when a
// request does not say: the configured InstanceName.
func (e *Emulator) defaultInstanceLocked() *instance {
	if in := e.instanceLocked(e.cfg.Zone, e.cfg.InstanceName); in != nil {
		return in
	}
	if len(e.instances) > 0 {
		return e.instances[0]
	}
	return nil
}

// metadataLocked is an instance's effective metadata item: the instance's
// value wins over the project's commonInstanceMetadata, as on GCE.
func (e *Emulator) metadataLocked(in *instance, key string) (string, bool) {
	if v, ok := in.Metadata[key]; ok {
		return v, true
	}
	v, ok := e.projectMeta[key]
	return v, ok
}

// metadataTrueLocked reads a boolean switch such as enable-oslogin.
func (e *Emulator) metadataTrueLocked(in *instance, key string) bool {
	v, _ := e.metadataLocked(in, key)
	return MetadataTrue(v)
}

// mayLoginLocked reports whether a holds roles/compute.osLogin (or the admin
// role when admin is set) on the project or on in.
func (e *Emulator) mayLoginLocked(a *account, in *instance, admin bool) bool {
	g := in.Grants[a.Email]
	if admin {
		return a.AdminLogin || g.AdminLogin
	}
	return a.Login || a.AdminLogin || g.Login || g.AdminLogin
}

// mayTunnelLocked reports whether a holds iap.tunnelInstances.accessViaIAP
// on in (through the project or the instance).
func (e *Emulator) mayTunnelLocked(a *account, in *instance) bool {
	return a.IAPTunnel || in.Grants[a.Email].IAPTunnel
}

// attachedAccountLocked is in's attached service account, nil when none.
func (e *Emulator) attachedAccountLocked(in *instance) *account {
	if in == nil || in.ServiceAccount == "" {
		return nil
	}
	return e.lookupLocked(in.ServiceAccount)
}

func (e *Emulator) normalizeInstanceLocked(in Instance) (Instance, error) {
	accounts := make([]Account, len(e.accounts))
	for i, a := range e.accounts {
		accounts[i] = a.Account
	}
	c := e.cfg
	return normalizeInstance(in, &c, accounts)
}

// Instances returns every instance with its guest attributes.
func (e *Emulator) Instances() []InstanceState {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]InstanceState, len(e.instances))
	for i, in := range e.instances {
		out[i] = in.snapshot()
	}
	return out
}

// LookupInstance finds an instance by name or numeric id; zone "" searches
// every zone.
func (e *Emulator) LookupInstance(zone, ref string) (InstanceState, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	in := e.instanceLocked(zone, ref)
	if in == nil {
		return InstanceState{}, fmt.Errorf("%w %q", ErrUnknownInstance, ref)
	}
	return in.snapshot(), nil
}

// PutInstance creates an instance or replaces the one with the same name in
// the same zone, as recreating or reconfiguring a VM would. A replaced
// instance keeps its id unless in names another and keeps its guest
// attributes only while its id stays the same (a recreated VM publishes
// anew).
func (e *Emulator) PutInstance(in Instance) (Instance, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if in.Zone == "" {
		in.Zone = e.cfg.Zone
	}
	old := e.instanceLocked(in.Zone, in.Name)
	if old != nil && in.ID == "" {
		in.ID = old.ID
	}
	n, err := e.normalizeInstanceLocked(in)
	if err != nil {
		return Instance{}, fmt.Errorf("put instance: %w", err)
	}
	for _, o := range e.instances {
		if o != old && o.ID == n.ID {
			return Instance{}, fmt.Errorf("put instance %s: id %s already used by instance %s", n.Name, n.ID, o.Name)
		}
	}
	if old != nil {
		if old.ID != n.ID {
			old.guestAttrs = nil
			old.created = e.nowLocked().Format(time.RFC3339Nano)
		}
		old.Instance = n
		e.log.Debug("instance changed", "name", n.Name, "zone", n.Zone, "id", n.ID)
		return n, nil
	}
	e.instances = append(e.instances, &instance{Instance: n, created: e.nowLocked().Format(time.RFC3339Nano)})
	e.log.Debug("instance added", "name", n.Name, "zone", n.Zone, "id", n.ID)
	return n, nil
}

// RemoveInstance deletes an instance; zone "" matches any zone.
func (e *Emulator) RemoveInstance(zone, ref string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	in := e.instanceLocked(zone, ref)
	if in == nil {
		return fmt.Errorf("remove instance: %w %q", ErrUnknownInstance, ref)
	}
	e.instances = slices.DeleteFunc(e.instances, func(o *instance) bool { return o == in })
	return nil
}

// SetInstanceGrant replaces email's instance-level roles on an instance.
func (e *Emulator) SetInstanceGrant(zone, ref, email string, g InstanceGrant) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	in := e.instanceLocked(zone, ref)
	if in == nil {
		return fmt.Errorf("set instance grant: %w %q", ErrUnknownInstance, ref)
	}
	a := e.lookupLocked(email)
	if a == nil {
		return fmt.Errorf("set instance grant: unknown account %q", email)
	}
	if g.AdminLogin {
		g.Login = true
	}
	grants := maps.Clone(in.Grants)
	if grants == nil {
		grants = map[string]InstanceGrant{}
	}
	if g == (InstanceGrant{}) {
		delete(grants, a.Email)
	} else {
		grants[a.Email] = g
	}
	in.Grants = grants
	return nil
}

// SetInstanceMetadata sets (or, with an empty value and remove, deletes)
// one instance metadata item.
func (e *Emulator) SetInstanceMetadata(zone, ref, key, value string, remove bool) error {
	if !metadataKeyRE.MatchString(key) {
		return fmt.Errorf("set instance metadata: invalid key %q", key)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	in := e.instanceLocked(zone, ref)
	if in == nil {
		return fmt.Errorf("set instance metadata: %w %q", ErrUnknownInstance, ref)
	}
	md := maps.Clone(in.Metadata)
	if md == nil {
		md = map[string]string{}
	}
	if remove {
		delete(md, key)
	} else {
		md[key] = value
	}
	in.Metadata = md
	return nil
}

// ProjectMetadata returns the project's commonInstanceMetadata.
func (e *Emulator) ProjectMetadata() map[string]string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return maps.Clone(e.projectMeta)
}

// SetProjectMetadata sets (or removes) one commonInstanceMetadata item.
func (e *Emulator) SetProjectMetadata(key, value string, remove bool) error {
	if !metadataKeyRE.MatchString(key) {
		return fmt.Errorf("set project metadata: invalid key %q", key)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	md := maps.Clone(e.projectMeta)
	if remove {
		delete(md, key)
	} else {
		md[key] = value
	}
	e.projectMeta = md
	return nil
}

// PutGuestAttribute stores a value as the instance's guest would write it
// (namespace/key), refusing it when the instance has guest attributes
// disabled. It is what the metadata server's PUT does, for tests that hold
// the *Emulator.
func (e *Emulator) PutGuestAttribute(zone, ref, namespace, key, value string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	in := e.instanceLocked(zone, ref)
	if in == nil {
		return fmt.Errorf("put guest attribute: %w %q", ErrUnknownInstance, ref)
	}
	if err := e.putGuestAttrLocked(in, namespace, key, value); err != nil {
		return fmt.Errorf("put guest attribute on %s: %w", in.Name, err)
	}
	return nil
}

// Guest attribute limits of the metadata server (Compute's documentation:
// namespace and key names, value size).
const (
	maxGuestAttrValue = 100 << 10
	maxGuestAttrName  = 63
)

// errGuestAttrsDisabled is the metadata server's refusal when the instance
// does not have enable-guest-attributes set.
var errGuestAttrsDisabled = errors.New("guest attributes endpoint access is disabled for this instance; set the metadata item enable-guest-attributes=TRUE")

// validGuestAttrName accepts 1-63 letters, digits, '-' or '_'.
func validGuestAttrName(s string) bool {
	if s == "" || len(s) > maxGuestAttrName {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

func (e *Emulator) putGuestAttrLocked(in *instance, ns, key, value string) error {
	if !e.metadataTrueLocked(in, MetaEnableGuestAttrs) {
		return errGuestAttrsDisabled
	}
	if !validGuestAttrName(ns) || !validGuestAttrName(key) {
		return fmt.Errorf("invalid guest attribute name %q/%q: 1-63 letters, digits, '-' or '_'", ns, key)
	}
	if len(value) > maxGuestAttrValue {
		return fmt.Errorf("guest attribute %s/%s: value of %d bytes exceeds %d", ns, key, len(value), maxGuestAttrValue)
	}
	in.putGuestAttr(ns, key, value)
	return nil
}

// guestAttrsLocked returns the attributes under a query path as Compute's
// getGuestAttributes understands it: "ns/" or "ns/key" or "" for all.
func guestAttrsLocked(in *instance, queryPath string) []GuestAttribute {
	ns, key, _ := strings.Cut(queryPath, "/")
	var out []GuestAttribute
	for _, a := range in.guestAttrs {
		if (ns == "" || a.Namespace == ns) && (key == "" || a.Key == key) {
			out = append(out, a)
		}
	}
	return out
}
