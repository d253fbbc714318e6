package destination

import (
	"fmt"
	"strconv"
	"strings"
)

// Instance is what a connection needs to know about one VM.
type Instance struct {
	Project        string
	Zone           string
	Name           string
	ID             string // numeric id, as a string: it does not fit every JSON number
	Status         string // RUNNING, TERMINATED, ...
	InternalIP     string // nic0's networkIP
	ExternalIP     string // nic0's first access config's natIP; empty when none
	ServiceAccount string // attached service account e-mail; empty when none
	Switches       Switches
}

// Switches are the metadata items that decide how to reach a VM, as the VM
// sees them: the instance's value wins over the project's
// commonInstanceMetadata.
type Switches struct {
	OSLogin             bool // enable-oslogin
	OSLoginCertificates bool // enable-oslogin-certificates
	GuestAttributes     bool // enable-guest-attributes
}

// Metadata keys behind Switches.
const (
	MetaOSLogin             = "enable-oslogin"
	MetaOSLoginCertificates = "enable-oslogin-certificates"
	MetaGuestAttributes     = "enable-guest-attributes"
)

var switchKeys = []string{MetaOSLogin, MetaOSLoginCertificates, MetaGuestAttributes}

// Destination is the instance's canonical name, NAME.ZONE.PROJECT.
func (in *Instance) Destination() Name {
	return Name{Instance: in.Name, Zone: in.Zone, Project: in.Project}
}

// Alias is the instance's host key alias, compute.<id>.
func (in *Instance) Alias() string { return AliasPrefix + in.ID }

// String names the instance for messages.
func (in *Instance) String() string {
	return fmt.Sprintf("instance %s (zone %s, project %s)", in.Name, in.Zone, in.Project)
}

// instanceFrom converts the wire form. Switches are filled later, once the
// project's metadata is known.
func instanceFrom(project string, j *instanceJSON) (*Instance, error) {
	in := &Instance{Project: project, Name: j.Name, ID: j.ID, Status: j.Status, Zone: lastSegment(j.Zone)}
	if _, err := strconv.ParseUint(j.ID, 10, 64); err != nil || in.Name == "" || in.Zone == "" {
		return nil, fmt.Errorf("the Compute API described an instance without a usable name, zone or id (name %q, zone %q, id %q)", j.Name, j.Zone, j.ID)
	}
	if len(j.NetworkInterfaces) > 0 {
		nic := j.NetworkInterfaces[0]
		in.InternalIP = nic.NetworkIP
		if len(nic.AccessConfigs) > 0 {
			in.ExternalIP = nic.AccessConfigs[0].NatIP
		}
	}
	if len(j.ServiceAccounts) > 0 {
		in.ServiceAccount = j.ServiceAccounts[0].Email
	}
	return in, nil
}

// lastSegment is the name at the end of a resource URL.
func lastSegment(link string) string {
	return link[strings.LastIndexByte(link, '/')+1:]
}

// value returns the value of key and whether it is set.
func (m metadataJSON) value(key string) (string, bool) {
	for _, it := range m.Items {
		if it.Key == key {
			if it.Value == nil {
				return "", true
			}
			return *it.Value, true
		}
	}
	return "", false
}

// needsProject reports whether some switch is not set on the instance, so
// that the project's metadata decides it.
func (m metadataJSON) needsProject() bool {
	for _, k := range switchKeys {
		if _, ok := m.value(k); !ok {
			return true
		}
	}
	return false
}

// effectiveSwitches reads each switch from the instance, else the project.
func effectiveSwitches(inst, proj metadataJSON) Switches {
	get := func(key string) bool {
		if v, ok := inst.value(key); ok {
			return metadataTrue(v)
		}
		v, _ := proj.value(key)
		return metadataTrue(v)
	}
	return Switches{
		OSLogin:             get(MetaOSLogin),
		OSLoginCertificates: get(MetaOSLoginCertificates),
		GuestAttributes:     get(MetaGuestAttributes),
	}
}

// metadataTrue reads a boolean item as Google's guest code does: true in
// any case, or the other spellings strconv.ParseBool takes, or yes.
func metadataTrue(v string) bool {
	v = strings.TrimSpace(v)
	b, err := strconv.ParseBool(v)
	return err == nil && b || strings.EqualFold(v, "true") || strings.EqualFold(v, "yes")
}
