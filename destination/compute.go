package destination

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// The Compute Engine API v1 methods this package calls, by hand: four GETs
// do not justify linking the generated client (see doc.go).

// maxPages bounds an aggregatedList walk; a filter by name or id matches a
// handful of instances, so more pages mean a misbehaving server.
const maxPages = 20

// maxBody bounds what is read of one response.
const maxBody = 8 << 20

// computeClient calls Compute with an authenticated client.
type computeClient struct {
	hc   *http.Client
	base string // ends in "/compute/v1/"
}

// APIError is a refusal by the Compute API: its HTTP status, Google's
// reason and message, and the IAM permission the method needs.
type APIError struct {
	Code       int
	Reason     string // errors[0].reason, e.g. forbidden, notFound
	Message    string // Google's text, for the curious
	Permission string // e.g. compute.instances.get
}

func (e *APIError) Error() string {
	return fmt.Sprintf("the Compute API answered %d %s: %s", e.Code, http.StatusText(e.Code), e.Message)
}

// Wire shapes: only the fields read here. int64 fields arrive as strings.
type (
	metadataItem struct {
		Key   string  `json:"key"`
		Value *string `json:"value"`
	}
	metadataJSON struct {
		Items []metadataItem `json:"items"`
	}
	instanceJSON struct {
		ID                string `json:"id"`
		Name              string `json:"name"`
		Zone              string `json:"zone"` // a URL ending in zones/<zone>
		Status            string `json:"status"`
		NetworkInterfaces []struct {
			NetworkIP     string `json:"networkIP"`
			AccessConfigs []struct {
				NatIP string `json:"natIP"`
			} `json:"accessConfigs"`
		} `json:"networkInterfaces"`
		ServiceAccounts []struct {
			Email string `json:"email"`
		} `json:"serviceAccounts"`
		Metadata metadataJSON `json:"metadata"`
	}
	projectJSON struct {
		CommonInstanceMetadata metadataJSON `json:"commonInstanceMetadata"`
	}
	aggregatedJSON struct {
		Items map[string]struct {
			Instances []instanceJSON `json:"instances"`
		} `json:"items"`
		NextPageToken string `json:"nextPageToken"`
	}
	guestAttributesJSON struct {
		QueryValue *struct {
			Items []GuestAttribute `json:"items"`
		} `json:"queryValue"`
	}
)

// GuestAttribute is one value a VM's guest wrote.
type GuestAttribute struct {
	Namespace string `json:"namespace"`
	Key       string `json:"key"`
	Value     string `json:"value"`
}

func (c *computeClient) instance(ctx context.Context, project, zone, ref string) (*instanceJSON, error) {
	var out instanceJSON
	err := c.get(ctx, "compute.instances.get", path("projects", project, "zones", zone, "instances", ref), nil, &out)
	return &out, err
}

func (c *computeClient) project(ctx context.Context, project string) (*projectJSON, error) {
	var out projectJSON
	err := c.get(ctx, "compute.projects.get", path("projects", project), nil, &out)
	return &out, err
}

// aggregated lists the project's instances in every zone that pass filter.
func (c *computeClient) aggregated(ctx context.Context, project, filter string) ([]instanceJSON, error) {
	var all []instanceJSON
	q := url.Values{"filter": {filter}}
	for range maxPages {
		var page aggregatedJSON
		if err := c.get(ctx, "compute.instances.list", path("projects", project, "aggregated", "instances"), q, &page); err != nil {
			return nil, err
		}
		for _, scoped := range page.Items {
			all = append(all, scoped.Instances...)
		}
		if page.NextPageToken == "" {
			return all, nil
		}
		q.Set("pageToken", page.NextPageToken)
	}
	return nil, fmt.Errorf("the Compute API kept returning pages of instances for %q after %d pages", filter, maxPages)
}

func (c *computeClient) guestAttributes(ctx context.Context, project, zone, ref, queryPath string) ([]GuestAttribute, error) {
	var out guestAttributesJSON
	q := url.Values{"queryPath": {queryPath}}
	err := c.get(ctx, "compute.instances.getGuestAttributes",
		path("projects", project, "zones", zone, "instances", ref, "getGuestAttributes"), q, &out)
	if err != nil || out.QueryValue == nil {
		return nil, err
	}
	return out.QueryValue.Items, nil
}

// path joins escaped segments, so that no name can add a path level.
func path(segs ...string) string {
	for i, s := range segs {
		segs[i] = url.PathEscape(s)
	}
	return strings.Join(segs, "/")
}

// get performs one GET and decodes the JSON answer into out, or returns
// an *APIError for Google's error envelope.
func (c *computeClient) get(ctx context.Context, permission, p string, q url.Values, out any) error {
	u := c.base + p
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.hc.Do(req)
	if err != nil {
		return reachError(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return fmt.Errorf("read the Compute API's answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return apiError(resp.StatusCode, permission, body)
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("the Compute API's answer is not the JSON expected: %w", err)
	}
	return nil
}

// apiError reads Google's error envelope; a body that is not one (a proxy's
// page) still yields the status.
func apiError(code int, permission string, body []byte) *APIError {
	var env struct {
		Error struct {
			Message string `json:"message"`
			Errors  []struct {
				Reason string `json:"reason"`
			} `json:"errors"`
		} `json:"error"`
	}
	e := &APIError{Code: code, Permission: permission}
	if json.Unmarshal(body, &env) == nil {
		e.Message = env.Error.Message
		if len(env.Error.Errors) > 0 {
			e.Reason = env.Error.Errors[0].Reason
		}
	}
	if e.Message == "" {
		e.Message = http.StatusText(code)
	}
	e.Message = strings.Join(strings.Fields(e.Message), " ")
	return e
}

// reachError drops the method and URL that net/http puts in front of a
// transport error: the person reading it needs the cause.
func reachError(err error) error {
	var uerr *url.Error
	if errors.As(err, &uerr) {
		err = uerr.Err
	}
	return fmt.Errorf("could not reach the Compute API: %w", err)
}
