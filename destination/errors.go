package destination

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
)

// NotFoundError is a destination the Compute API does not know.
type NotFoundError struct{ Name Name }

func (e *NotFoundError) Error() string {
	n := e.Name
	what := "instance " + n.Instance
	if n.Instance == "" {
		what = "instance with id " + n.ID
	}
	where := "in any zone of project " + n.Project
	if n.Zone != "" {
		where = "in zone " + n.Zone + " of project " + n.Project
	}
	return fmt.Sprintf("there is no %s %s; check the name, zone and project (a recreated VM gets a new id)", what, where)
}

// AmbiguousError is an instance name used in more than one zone.
type AmbiguousError struct {
	Name  Name
	Zones []string
}

func (e *AmbiguousError) Error() string {
	return fmt.Sprintf("instance %s exists in %d zones of project %s (%s); name one, as %s.ZONE.%s or with --zone",
		e.Name.Instance, len(e.Zones), e.Name.Project, strings.Join(e.Zones, ", "), e.Name.Instance, e.Name.Project)
}

// NoHostKeysError means a VM's host cannot be verified: nothing usable is
// published in its guest attributes. Callers fail closed on it; trusting
// the host on first use instead is exactly what this package exists to
// avoid.
type NoHostKeysError struct {
	Instance *Instance
	Rejected []string // values published but unusable, and why
}

func (e *NoHostKeysError) Error() string {
	in := e.Instance
	var b strings.Builder
	fmt.Fprintf(&b, "%s publishes no usable SSH host keys in its guest attributes, so its identity cannot be verified; refusing to connect rather than trust it on first use.", in)
	if len(e.Rejected) > 0 {
		fmt.Fprintf(&b, " Values rejected: %s.", strings.Join(e.Rejected, "; "))
	}
	if !in.Switches.GuestAttributes {
		fmt.Fprintf(&b, " Guest attributes are not enabled for it: set the metadata item %s=TRUE on the instance or project.", MetaGuestAttributes)
	}
	fmt.Fprintf(&b, " The guest agent publishes host keys only at the VM's first boot, and only when %s=TRUE is already set then, so an existing VM must be recreated after enabling it;"+
		" the organization policy constraints/compute.disableGuestAttributesAccess blocks guest attributes entirely; images without Google's guest agent publish nothing.", MetaGuestAttributes)
	return b.String()
}

// PermissionError is a 401 or 403 from the Compute API, said in terms of
// what to grant.
type PermissionError struct {
	Project    string
	Permission string
	Scope      bool // the token lacks an OAuth scope, not an IAM permission
	Unauth     bool // the credentials themselves were refused
	Err        *APIError
}

func (e *PermissionError) Error() string {
	switch {
	case e.Unauth:
		return "the Compute API refused the credentials (expired, revoked or for another service); get new credentials"
	case e.Scope:
		return "the credentials' access token lacks a Compute scope (cloud-platform, compute or compute.readonly); on a VM, give its service account the cloud-platform scope"
	}
	roles := "roles/compute.viewer"
	if e.Permission == "compute.instances.getGuestAttributes" {
		roles = "roles/compute.viewer or roles/compute.instanceAdmin.v1"
	}
	return fmt.Sprintf("the credentials lack the permission %s in project %s; grant %s (or a custom role with that permission) to the account", e.Permission, e.Project, roles)
}

func (e *PermissionError) Unwrap() error { return e.Err }

// explain turns a Compute error for name into one a person can act on.
func explain(err error, n Name) error {
	var aerr *APIError
	if !errors.As(err, &aerr) {
		return err
	}
	switch aerr.Code {
	case http.StatusNotFound:
		return &NotFoundError{Name: n}
	case http.StatusUnauthorized:
		return &PermissionError{Project: n.Project, Permission: aerr.Permission, Unauth: true, Err: aerr}
	case http.StatusForbidden:
		return &PermissionError{Project: n.Project, Permission: aerr.Permission,
			Scope: strings.Contains(strings.ToLower(aerr.Message), "scope"), Err: aerr}
	}
	return err
}

// zonesOf lists the zones of instances, sorted, for AmbiguousError.
func zonesOf(list []*Instance) []string {
	var zones []string
	for _, in := range list {
		zones = append(zones, in.Zone)
	}
	slices.Sort(zones)
	return zones
}
