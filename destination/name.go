package destination

import (
	"fmt"
	"regexp"
	"strings"
)

// Name is a destination as written on a command line or by ssh: an
// instance name with an optional zone and project, or a numeric instance
// id (the compute.ID host key alias).
type Name struct {
	Instance string // instance name; empty when the name is an id
	ID       string // numeric instance id; empty when the name is a name
	Zone     string // empty: look it up
	Project  string // empty: the caller's default project
}

// AliasPrefix starts the host key alias of an instance, compute.<id>, as
// gcloud writes it. The id stays when a VM is renamed and changes when it is
// recreated, so known host keys follow the machine, not the name.
const AliasPrefix = "compute."

// Compute's resource naming rules.
var (
	instanceNameRE = regexp.MustCompile(`^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$`)
	zoneRE         = regexp.MustCompile(`^[a-z]+-[a-z]+[0-9]+-[a-z]$`)
	// A project id, optionally domain-scoped (example.com:my-project).
	projectRE = regexp.MustCompile(`^([a-z0-9][-a-z0-9.]*[a-z0-9]:)?[a-z][-a-z0-9]{4,28}[a-z0-9]$`)
	idRE      = regexp.MustCompile(`^[1-9][0-9]{0,19}$`)
)

// Parse reads a destination name:
//
//	NAME                 an instance in the default project, any zone
//	NAME.ZONE.PROJECT    as `gcloud compute config-ssh` writes host names
//	compute.ID           the host key alias; needs a project
//
// ssh may hand over a known_hosts name as [NAME]:PORT; the brackets and the
// port are dropped. Everything else is refused, so that a typo never turns
// into a lookup of some other VM.
func Parse(s string) (Name, error) {
	orig := s
	if strings.HasPrefix(s, "[") {
		if i := strings.Index(s, "]:"); i > 0 {
			s = s[1:i]
		}
	}
	if id, ok := strings.CutPrefix(s, AliasPrefix); ok {
		if !idRE.MatchString(id) {
			return Name{}, fmt.Errorf("%q is not a destination: after %q comes the numeric instance id", orig, AliasPrefix)
		}
		return Name{ID: id}, nil
	}
	inst, rest, hasZone := strings.Cut(s, ".")
	n := Name{Instance: inst}
	if hasZone {
		zone, project, ok := strings.Cut(rest, ".")
		if !ok {
			return Name{}, fmt.Errorf("%q is not a destination: write NAME, NAME.ZONE.PROJECT or compute.ID", orig)
		}
		n.Zone, n.Project = zone, project
	}
	if err := n.check(); err != nil {
		return Name{}, fmt.Errorf("%q is not a destination: %w", orig, err)
	}
	return n, nil
}

// check applies Compute's naming rules to the parts that are set.
func (n Name) check() error {
	switch {
	case n.Instance == "" && n.ID == "":
		return fmt.Errorf("no instance name or id")
	case n.Instance != "" && !instanceNameRE.MatchString(n.Instance):
		return fmt.Errorf("instance name %q must be 1-63 lowercase letters, digits or hyphens, starting with a letter", n.Instance)
	case n.ID != "" && !idRE.MatchString(n.ID):
		return fmt.Errorf("instance id %q must be 1-20 digits", n.ID)
	case n.Zone != "" && !zoneRE.MatchString(n.Zone):
		return fmt.Errorf("%q is not a zone such as us-central1-a", n.Zone)
	case n.Project != "" && !projectRE.MatchString(n.Project):
		return fmt.Errorf("%q is not a project id", n.Project)
	}
	return nil
}

// WithDefaults fills an empty project and zone from defaults.
func (n Name) WithDefaults(project, zone string) Name {
	if n.Project == "" {
		n.Project = project
	}
	if n.Zone == "" {
		n.Zone = zone
	}
	return n
}

// String writes the name back in the form Parse reads: compute.ID for ids,
// NAME.ZONE.PROJECT when both are known, else NAME.
func (n Name) String() string {
	switch {
	case n.ID != "" && n.Instance == "":
		return AliasPrefix + n.ID
	case n.Zone != "" && n.Project != "":
		return n.Instance + "." + n.Zone + "." + n.Project
	}
	return n.Instance
}

// key identifies a lookup in a cache: the same name with different
// defaults is a different lookup.
func (n Name) key() string {
	return n.Project + "/" + n.Zone + "/" + n.Instance + "/" + n.ID
}
