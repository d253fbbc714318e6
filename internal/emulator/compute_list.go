package emulator

import (
	"encoding/base64"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// instances.list and instances.aggregatedList with Compute's filter and
// paging parameters.

// maxPageSize is Compute's default and largest maxResults.
const maxPageSize = 500

type computeInstanceList struct {
	Kind          string            `json:"kind"`
	ID            string            `json:"id"`
	Items         []computeInstance `json:"items,omitempty"`
	NextPageToken string            `json:"nextPageToken,omitempty"`
	SelfLink      string            `json:"selfLink"`
}

type computeWarningData struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

type computeWarning struct {
	Code    string               `json:"code"`
	Message string               `json:"message"`
	Data    []computeWarningData `json:"data"`
}

type computeScopedList struct {
	Instances []computeInstance `json:"instances,omitempty"`
	Warning   *computeWarning   `json:"warning,omitempty"`
}

type computeAggregatedList struct {
	Kind          string                       `json:"kind"`
	ID            string                       `json:"id"`
	Items         map[string]computeScopedList `json:"items"`
	NextPageToken string                       `json:"nextPageToken,omitempty"`
	SelfLink      string                       `json:"selfLink"`
}

// pageParams reads maxResults and pageToken. Tokens are opaque to clients;
// here they carry the offset of the next item.
func pageParams(q url.Values) (size, offset int, aerr *apiError) {
	size = maxPageSize
	if s := q.Get("maxResults"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return 0, 0, errComputeInvalid("maxResults", s, "Must be a non-negative integer.")
		}
		if n > 0 && n < maxPageSize {
			size = n
		}
	}
	if t := q.Get("pageToken"); t != "" {
		b, err := base64.RawURLEncoding.DecodeString(t)
		rest, ok := strings.CutPrefix(string(b), "offset:")
		n, err2 := strconv.Atoi(rest)
		if err != nil || !ok || err2 != nil || n < 0 {
			return 0, 0, errComputeInvalid("pageToken", t, "Invalid page token.")
		}
		offset = n
	}
	return size, offset, nil
}

func pageToken(offset int) string {
	return base64.RawURLEncoding.EncodeToString([]byte("offset:" + strconv.Itoa(offset)))
}

// page cuts one page out of n items and says where the next starts.
func page(n, size, offset int) (from, to int, next string) {
	from = min(offset, n)
	to = min(from+size, n)
	if to < n {
		next = pageToken(to)
	}
	return from, to, next
}

// filteredInstancesLocked returns the instances of zone ("" = all, in zone
// order) that pass the request's filter.
func (e *Emulator) filteredInstancesLocked(zone string, q url.Values) ([]*instance, *apiError) {
	f, aerr := parseComputeFilter(q.Get("filter"))
	if aerr != nil {
		return nil, aerr
	}
	var out []*instance
	for _, z := range e.zonesLocked() {
		if zone != "" && z != zone {
			continue
		}
		for _, in := range e.instances {
			if in.Zone == z && f.match(in) {
				out = append(out, in)
			}
		}
	}
	return out, nil
}

// zonesLocked are the zones the project reports: the default zone and every
// zone holding an instance, sorted.
func (e *Emulator) zonesLocked() []string {
	zones := []string{e.cfg.Zone}
	for _, in := range e.instances {
		if !slices.Contains(zones, in.Zone) {
			zones = append(zones, in.Zone)
		}
	}
	slices.Sort(zones)
	return zones
}

func (e *Emulator) listInstancesLocked(base, zone string, q url.Values) (any, *apiError) {
	size, offset, aerr := pageParams(q)
	if aerr != nil {
		return nil, aerr
	}
	list, aerr := e.filteredInstancesLocked(zone, q)
	if aerr != nil {
		return nil, aerr
	}
	p := "projects/" + e.cfg.ProjectID + "/zones/" + zone + "/instances"
	out := computeInstanceList{Kind: "compute#instanceList", ID: p, SelfLink: base + "/" + p}
	from, to, next := page(len(list), size, offset)
	for _, in := range list[from:to] {
		out.Items = append(out.Items, e.instanceJSONLocked(base, in))
	}
	out.NextPageToken = next
	return out, nil
}

func (e *Emulator) aggregatedInstancesLocked(base string, q url.Values) (any, *apiError) {
	size, offset, aerr := pageParams(q)
	if aerr != nil {
		return nil, aerr
	}
	list, aerr := e.filteredInstancesLocked("", q)
	if aerr != nil {
		return nil, aerr
	}
	p := "projects/" + e.cfg.ProjectID + "/aggregated/instances"
	out := computeAggregatedList{Kind: "compute#instanceAggregatedList", ID: p, SelfLink: base + "/" + p,
		Items: map[string]computeScopedList{}}
	from, to, next := page(len(list), size, offset)
	for _, in := range list[from:to] {
		scope := "zones/" + in.Zone
		l := out.Items[scope]
		l.Instances = append(l.Instances, e.instanceJSONLocked(base, in))
		out.Items[scope] = l
	}
	for _, z := range e.zonesLocked() {
		scope := "zones/" + z
		if _, ok := out.Items[scope]; !ok {
			out.Items[scope] = computeScopedList{Warning: &computeWarning{Code: "NO_RESULTS_ON_PAGE",
				Message: "There are no results for scope '" + scope + "' on this page.",
				Data:    []computeWarningData{{Key: "scope", Value: scope}}}}
		}
	}
	out.NextPageToken = next
	return out, nil
}
