package emulator

import (
	"crypto/sha256"
	"encoding/base64"
	"maps"
	"slices"
	"strings"
	"time"
)

// Compute Engine API v1 resources as Google serialises them: int64 fields
// (id) as strings, links as absolute URLs under the API root, timestamps
// with milliseconds and a zone offset, and base64 fingerprints. Only the
// fields a client of this project or gcloud's describe/ssh reads are
// filled; the rest stay absent, which Google's clients accept.

type computeMetadataItem struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

type computeMetadata struct {
	Kind        string                `json:"kind"`
	Fingerprint string                `json:"fingerprint"`
	Items       []computeMetadataItem `json:"items,omitempty"`
}

type computeAccessConfig struct {
	Kind        string `json:"kind"`
	Type        string `json:"type"`
	Name        string `json:"name"`
	NatIP       string `json:"natIP,omitempty"`
	NetworkTier string `json:"networkTier"`
}

type computeNetworkInterface struct {
	Kind          string                `json:"kind"`
	Name          string                `json:"name"`
	Network       string                `json:"network"`
	Subnetwork    string                `json:"subnetwork"`
	NetworkIP     string                `json:"networkIP"`
	StackType     string                `json:"stackType"`
	AccessConfigs []computeAccessConfig `json:"accessConfigs,omitempty"`
	Fingerprint   string                `json:"fingerprint"`
}

type computeServiceAccount struct {
	Email  string   `json:"email"`
	Scopes []string `json:"scopes"`
}

type computeInstance struct {
	Kind               string                    `json:"kind"`
	ID                 string                    `json:"id"`
	CreationTimestamp  string                    `json:"creationTimestamp"`
	Name               string                    `json:"name"`
	MachineType        string                    `json:"machineType"`
	Status             string                    `json:"status"`
	Zone               string                    `json:"zone"`
	CanIPForward       bool                      `json:"canIpForward"`
	NetworkInterfaces  []computeNetworkInterface `json:"networkInterfaces"`
	Metadata           computeMetadata           `json:"metadata"`
	ServiceAccounts    []computeServiceAccount   `json:"serviceAccounts,omitempty"`
	SelfLink           string                    `json:"selfLink"`
	CPUPlatform        string                    `json:"cpuPlatform"`
	LabelFingerprint   string                    `json:"labelFingerprint"`
	StartRestricted    bool                      `json:"startRestricted"`
	DeletionProtection bool                      `json:"deletionProtection"`
	Fingerprint        string                    `json:"fingerprint"`
}

// computeFingerprint is Compute's optimistic-locking token: eight bytes of a hash
// of the content, base64, so it changes exactly when the content does.
func computeFingerprint(parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	return base64.StdEncoding.EncodeToString(h.Sum(nil)[:8])
}

// computeTimestamp renders an RFC 3339 time the way Compute does
// ("2024-05-01T09:30:00.123-07:00").
func computeTimestamp(rfc3339 string) string {
	t, err := time.Parse(time.RFC3339Nano, rfc3339)
	if err != nil {
		return rfc3339
	}
	return t.Format("2006-01-02T15:04:05.000-07:00")
}

func metadataJSON(md map[string]string) computeMetadata {
	m := computeMetadata{Kind: "compute#metadata"}
	parts := []string{"metadata"}
	for _, k := range slices.Sorted(maps.Keys(md)) {
		m.Items = append(m.Items, computeMetadataItem{Key: k, Value: md[k]})
		parts = append(parts, k, md[k])
	}
	m.Fingerprint = computeFingerprint(parts...)
	return m
}

func (e *Emulator) instanceJSONLocked(base string, in *instance) computeInstance {
	p := base + "/projects/" + e.cfg.ProjectID
	zone := p + "/zones/" + in.Zone
	nic := computeNetworkInterface{Kind: "compute#networkInterface", Name: "nic0",
		Network:    p + "/global/networks/default",
		Subnetwork: p + "/regions/" + Region(in.Zone) + "/subnetworks/default",
		NetworkIP:  in.NetworkIP, StackType: "IPV4_ONLY",
		Fingerprint: computeFingerprint("nic0", in.NetworkIP, in.NatIP)}
	if in.NatIP != "" {
		nic.AccessConfigs = []computeAccessConfig{{Kind: "compute#accessConfig", Type: "ONE_TO_ONE_NAT",
			Name: "External NAT", NatIP: in.NatIP, NetworkTier: "PREMIUM"}}
	}
	out := computeInstance{Kind: "compute#instance", ID: in.ID, CreationTimestamp: computeTimestamp(in.created),
		Name: in.Name, MachineType: zone + "/machineTypes/e2-small", Status: in.Status, Zone: zone,
		NetworkInterfaces: []computeNetworkInterface{nic}, Metadata: metadataJSON(in.Metadata),
		SelfLink: zone + "/instances/" + in.Name, CPUPlatform: "Intel Broadwell",
		LabelFingerprint: computeFingerprint("labels")}
	if in.ServiceAccount != "" {
		out.ServiceAccounts = []computeServiceAccount{{Email: in.ServiceAccount, Scopes: slices.Clone(in.Scopes)}}
	}
	out.Fingerprint = computeFingerprint("instance", in.ID, in.Status, in.NetworkIP, in.NatIP, in.ServiceAccount, out.Metadata.Fingerprint)
	return out
}

type computeProject struct {
	Kind                   string          `json:"kind"`
	ID                     string          `json:"id"`
	CreationTimestamp      string          `json:"creationTimestamp"`
	Name                   string          `json:"name"`
	CommonInstanceMetadata computeMetadata `json:"commonInstanceMetadata"`
	SelfLink               string          `json:"selfLink"`
	DefaultServiceAccount  string          `json:"defaultServiceAccount"`
	XpnProjectStatus       string          `json:"xpnProjectStatus"`
	DefaultNetworkTier     string          `json:"defaultNetworkTier"`
}

func (e *Emulator) projectJSONLocked(base string) computeProject {
	return computeProject{Kind: "compute#project", ID: e.cfg.ProjectNumber,
		CreationTimestamp: "2020-01-01T00:00:00.000-08:00", Name: e.cfg.ProjectID,
		CommonInstanceMetadata: metadataJSON(e.projectMeta),
		SelfLink:               base + "/projects/" + e.cfg.ProjectID,
		DefaultServiceAccount:  e.cfg.ProjectNumber + "-compute@developer.gserviceaccount.com",
		XpnProjectStatus:       "UNSPECIFIED_XPN_PROJECT_STATUS", DefaultNetworkTier: "PREMIUM"}
}

type computeGuestAttributes struct {
	Kind          string `json:"kind"`
	QueryPath     string `json:"queryPath,omitempty"`
	VariableKey   string `json:"variableKey,omitempty"`
	VariableValue string `json:"variableValue,omitempty"`
	QueryValue    *struct {
		Items []GuestAttribute `json:"items"`
	} `json:"queryValue,omitempty"`
	SelfLink string `json:"selfLink"`
}

// guestAttributesJSON answers getGuestAttributes. Nothing published under
// the path is Google's 404 naming the path as a 'Guest Attribute', which is
// what gcloud matches to mean "no host keys". What is stored is served even
// if the instance has since disabled guest attributes: the switch stops the
// guest from writing, and Google's behaviour for reads then is unconfirmed.
func guestAttributesJSON(instanceLink string, in *instance, queryPath, variableKey string) (computeGuestAttributes, *apiError) {
	out := computeGuestAttributes{Kind: "compute#guestAttributes", SelfLink: instanceLink + "/getGuestAttributes"}
	if variableKey != "" {
		ns, key, ok := strings.Cut(variableKey, "/")
		found := guestAttrsLocked(in, variableKey)
		if !ok || ns == "" || key == "" || len(found) != 1 {
			return out, errGuestAttrNotFound(variableKey)
		}
		out.VariableKey, out.VariableValue = variableKey, found[0].Value
		return out, nil
	}
	found := guestAttrsLocked(in, queryPath)
	if len(found) == 0 {
		return out, errGuestAttrNotFound(queryPath)
	}
	out.QueryPath = queryPath
	out.QueryValue = &struct {
		Items []GuestAttribute `json:"items"`
	}{Items: found}
	return out, nil
}

func errGuestAttrNotFound(path string) *apiError {
	return &apiError{Code: 404, Reason: "notFound",
		Message: "The resource '" + path + "' of type 'Guest Attribute' was not found."}
}
