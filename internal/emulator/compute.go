package emulator

import (
	"net/http"
	"net/url"
	"strings"
)

// computePrefix is where the Compute Engine API v1 face lives, as on
// compute.googleapis.com, so that option.WithEndpoint(base+"/compute/v1/")
// and gcloud's CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE=http://HOST/compute/v1/
// both reach it unchanged.
const computePrefix = "/compute/v1/"

// computeRoute is a parsed Compute API request: the discovery id, the
// permission Google checks for it and the path parameters.
type computeRoute struct {
	id         string // discovery id, e.g. compute.instances.get
	permission string // IAM permission, e.g. compute.instances.get
	project    string
	zone       string
	instance   string
}

// parseComputeRoute maps a GET path below /compute/v1/ to the read methods
// the emulator serves. Segments are split before unescaping so an escaped
// slash cannot forge a path level.
func parseComputeRoute(method, escapedPath string) (computeRoute, bool) {
	rest, ok := strings.CutPrefix(escapedPath, computePrefix)
	if !ok || method != http.MethodGet {
		return computeRoute{}, false
	}
	segs := strings.Split(rest, "/")
	for i, s := range segs {
		u, err := url.PathUnescape(s)
		if err != nil || u == "" {
			return computeRoute{}, false
		}
		segs[i] = u
	}
	if len(segs) < 2 || segs[0] != "projects" {
		return computeRoute{}, false
	}
	rt := computeRoute{project: segs[1]}
	switch {
	case len(segs) == 2:
		rt.id = "compute.projects.get"
	case len(segs) == 4 && segs[2] == "aggregated" && segs[3] == "instances":
		rt.id, rt.permission = "compute.instances.aggregatedList", "compute.instances.list"
	case len(segs) >= 5 && segs[2] == "zones" && segs[4] == "instances":
		rt.zone = segs[3]
		switch {
		case len(segs) == 5:
			rt.id = "compute.instances.list"
		case len(segs) == 6:
			rt.id, rt.instance = "compute.instances.get", segs[5]
		case len(segs) == 7 && segs[6] == "getGuestAttributes":
			rt.id, rt.instance = "compute.instances.getGuestAttributes", segs[5]
		}
	}
	if rt.id == "" {
		return computeRoute{}, false
	}
	if rt.permission == "" {
		rt.permission = rt.id
	}
	return rt, true
}

// serveCompute is the Compute Engine API face: faults, then Google's order
// of checks (credentials 401, scopes 403, project 404, permission 403), then
// the method. Google answers a missing permission before it says whether
// the instance exists, so callers without compute.viewer learn nothing.
func (e *Emulator) serveCompute(w http.ResponseWriter, r *http.Request) {
	rt, ok := parseComputeRoute(r.Method, r.URL.EscapedPath())
	if !ok {
		errComputeNotFound(strings.TrimPrefix(r.URL.Path, computePrefix)).write(w)
		return
	}
	e.count(rt.id)
	e.log.Debug("compute call", "method", rt.id, "project", rt.project, "zone", rt.zone, "instance", rt.instance)
	if f, fired := e.fireFault(rt.id, false, false); fired {
		w = e.withLatency(w, r, f)
		if !e.preFaults(w, r, f, func(code int) {
			errForStatus(code, false, e.cfg.ProjectNumber, f.RetryAfter).write(w)
		}) {
			return
		}
	}
	resp, aerr := e.callCompute(r, rt)
	if aerr != nil {
		e.log.Debug("compute error", "method", rt.id, "code", aerr.Code, "message", aerr.Message)
		aerr.write(w)
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

func (e *Emulator) callCompute(r *http.Request, rt computeRoute) (any, *apiError) {
	q := r.URL.Query()
	base := computeBase(r)

	e.mu.Lock()
	defer e.mu.Unlock()
	at, aerr := e.bearerLocked(r)
	if aerr != nil {
		return nil, aerr
	}
	if !at.hasScope(false) {
		return nil, errComputeScopes(rt.id)
	}
	if rt.project != e.cfg.ProjectID && rt.project != e.cfg.ProjectNumber {
		return nil, errComputeNotFound("projects/" + rt.project)
	}
	p := e.cfg.ProjectID
	resource := "projects/" + p
	if rt.instance != "" {
		resource += "/zones/" + rt.zone + "/instances/" + rt.instance
	}
	if a := e.lookupLocked(at.email); a == nil || !a.ComputeViewer {
		return nil, errComputePermission(rt.permission, resource)
	}
	if rt.zone != "" && !zoneRE.MatchString(rt.zone) {
		return nil, errComputeNotFound("projects/" + p + "/zones/" + rt.zone)
	}

	switch rt.id {
	case "compute.projects.get":
		return e.projectJSONLocked(base), nil

	case "compute.instances.list":
		return e.listInstancesLocked(base, rt.zone, q)

	case "compute.instances.aggregatedList":
		return e.aggregatedInstancesLocked(base, q)

	case "compute.instances.get":
		in := e.instanceLocked(rt.zone, rt.instance)
		if in == nil {
			return nil, errComputeNotFound(resource)
		}
		return e.instanceJSONLocked(base, in), nil

	case "compute.instances.getGuestAttributes":
		in := e.instanceLocked(rt.zone, rt.instance)
		if in == nil {
			return nil, errComputeNotFound(resource)
		}
		return guestAttributesJSON(e.instanceJSONLocked(base, in).SelfLink, in, q.Get("queryPath"), q.Get("variableKey"))
	}
	return nil, errComputeNotFound(resource)
}

// computeBase is the API root as the caller reached it, so selfLinks point
// back at this emulator and gcloud can parse them with its endpoint
// override.
func computeBase(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host + strings.TrimSuffix(computePrefix, "/")
}

// Compute's error texts. Compute's envelope has no "status" field.
func errComputeNotFound(resource string) *apiError {
	msg := "The resource '" + resource + "' was not found"
	return &apiError{Code: 404, Message: msg, Reason: "notFound"}
}

func errComputePermission(permission, resource string) *apiError {
	return &apiError{Code: 403, Reason: "forbidden",
		Message: "Required '" + permission + "' permission for '" + resource + "'"}
}

func errComputeInvalid(field, value, why string) *apiError {
	return &apiError{Code: 400, Reason: "invalid",
		Message: "Invalid value for field '" + field + "': '" + value + "'. " + why}
}

func errComputeScopes(id string) *apiError {
	return &apiError{Code: 403, Status: "PERMISSION_DENIED", Message: msgInsufficient, Reason: "insufficientPermissions",
		Header: http.Header{"Www-Authenticate": {googleAuthRealm + `, error="insufficient_scope", scope="` +
			ScopeCompute + " " + ScopeCloudPlatform + `"`}},
		Details: []any{errorInfo("ACCESS_TOKEN_SCOPE_INSUFFICIENT", map[string]string{
			"service": "compute.googleapis.com", "method": computeRPC(id)})}}
}

// computeRPC is the gRPC-style method name Google reports for a discovery
// id: compute.instances.get → compute.v1.InstancesService.Get.
func computeRPC(id string) string {
	parts := strings.Split(id, ".")
	if len(parts) != 3 {
		return id
	}
	upper := func(s string) string { return strings.ToUpper(s[:1]) + s[1:] }
	return "compute.v1." + upper(parts[1]) + "Service." + upper(parts[2])
}
