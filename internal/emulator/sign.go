package emulator

import (
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"

	"golang.org/x/crypto/ssh"
)

// methodSign is the discovery id of the v1 signing method.
const methodSign = "projects.locations.signSshPublicKey"

// computeInstanceRE is SignSshPublicKeyRequest.computeInstance: the
// instance is named by its numeric id, not its name.
var computeInstanceRE = regexp.MustCompile(`^projects/([^/]+)/zones/([^/]+)/instances/([0-9]+)$`)

// parseSignRoute recognises POST /v1/projects/{project}/locations/{location}:signSshPublicKey
// (the Go client expands {+parent} unescaped). segs are the unescaped
// segments after /v1/.
func parseSignRoute(method string, segs []string) (apiRoute, bool) {
	if method != http.MethodPost || len(segs) != 4 || segs[0] != "projects" || segs[2] != "locations" {
		return apiRoute{}, false
	}
	loc, ok := strings.CutSuffix(segs[3], ":signSshPublicKey")
	if !ok || loc == "" {
		return apiRoute{}, false
	}
	return apiRoute{m: methodByID(methodSign), project: segs[1], location: loc}, true
}

// signRequestJSON is SignSshPublicKeyRequest.
type signRequestJSON struct {
	SSHPublicKey      string `json:"sshPublicKey"`
	ComputeInstance   string `json:"computeInstance"`
	ServiceAccount    string `json:"serviceAccount"`
	AppEngineInstance string `json:"appEngineInstance"`
	CloudRunResource  string `json:"cloudRunResource"`
}

// signResponseJSON is SignSshPublicKeyResponse.
type signResponseJSON struct {
	SignedSSHPublicKey string `json:"signedSshPublicKey"`
}

// callSign signs a public key for one Compute Engine instance. The checks,
// in order: credentials (401); the cloud-platform scope, the only one the
// method accepts (403); a well-formed request naming an instance of this
// project whose region is the location (400, unknown instance 404);
// roles/compute.osLogin on the instance (403); iam.serviceAccounts.actAs on
// the instance's attached service account (403); a POSIX account for the
// project, which provisionPosixAccount creates (404). A serviceAccount that
// is not the attached one is signed anyway, as Google documents, and the
// VM's authorize refuses the certificate.
func (e *Emulator) callSign(r *http.Request, rt apiRoute, body []byte) (any, *apiError) {
	var req signRequestJSON
	if aerr := decodeBody(body, &req); aerr != nil {
		return nil, aerr
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	at, aerr := e.bearerLocked(r)
	if aerr != nil {
		return nil, aerr
	}
	if !slices.Contains(at.scopes, ScopeCloudPlatform) {
		return nil, errSignScopes()
	}
	caller := e.lookupLocked(at.email)
	if caller == nil {
		return nil, errForbidden()
	}
	if rt.project != e.cfg.ProjectID && rt.project != e.cfg.ProjectNumber {
		return nil, errForbidden() // Google does not tell strangers which projects exist
	}
	key, aerr := parseSignKey(req.SSHPublicKey)
	if aerr != nil {
		return nil, aerr
	}
	if req.ComputeInstance == "" {
		if req.AppEngineInstance != "" || req.CloudRunResource != "" {
			return nil, errInvalid("The emulator signs for Compute Engine instances only (computeInstance).")
		}
		return nil, errInvalid("computeInstance is required.")
	}
	m := computeInstanceRE.FindStringSubmatch(req.ComputeInstance)
	if m == nil {
		return nil, errInvalid(fmt.Sprintf("Invalid computeInstance %q: want projects/{project}/zones/{zone}/instances/{numeric id}.", req.ComputeInstance))
	}
	if !isProject(e.cfg, m[1]) {
		return nil, errInvalid(fmt.Sprintf("computeInstance project %q does not match the request's project %q.", m[1], rt.project))
	}
	in := e.instanceLocked(m[2], m[3])
	if in == nil || in.ID != m[3] {
		return nil, errNotFound()
	}
	if Region(in.Zone) != rt.location {
		return nil, errInvalid(fmt.Sprintf("Location %q is not the region of instance %s (%s).", rt.location, in.ID, Region(in.Zone)))
	}
	if !e.mayLoginLocked(caller, in, false) {
		return nil, errForbidden()
	}
	if sa := e.attachedAccountLocked(in); sa != nil && !mayActAs(caller, sa) {
		return nil, errForbidden()
	}
	if !caller.hasProject(e.cfg.ProjectID) {
		return nil, errNotFound()
	}
	wrongSA := !strings.EqualFold(strings.TrimSpace(req.ServiceAccount), in.ServiceAccount)
	line, err := e.signLocked(key, caller.username(), issuedCert{email: caller.Email, instanceID: in.ID, wrongServiceAccount: wrongSA})
	if err != nil {
		e.log.Error("sign", "err", err)
		return nil, errForStatus(500, true, "", 0)
	}
	e.log.Debug("certificate signed", "account", caller.Email, "instance", in.Name, "wrongServiceAccount", wrongSA)
	return signResponseJSON{SignedSSHPublicKey: line}, nil
}

func isProject(c Config, p string) bool { return p == c.ProjectID || p == c.ProjectNumber }

// parseSignKey accepts one OpenSSH public key line that is not itself a
// certificate.
func parseSignKey(line string) (ssh.PublicKey, *apiError) {
	if !validKey(line) {
		return nil, errInvalid("sshPublicKey must be one OpenSSH public key line.")
	}
	key, _, _, _, err := ssh.ParseAuthorizedKey([]byte(line))
	if err != nil {
		return nil, errInvalid("sshPublicKey must be one OpenSSH public key line.")
	}
	if _, isCert := key.(*ssh.Certificate); isCert {
		return nil, errInvalid("sshPublicKey is a certificate; send the plain public key.")
	}
	return key, nil
}

// mayActAs is iam.serviceAccounts.actAs (roles/iam.serviceAccountUser) of
// caller on the service account sa: a service account may always act as
// itself; anyone else needs to be listed in sa.ServiceAccountUsers.
func mayActAs(caller, sa *account) bool {
	if strings.EqualFold(caller.Email, sa.Email) {
		return true
	}
	return slices.ContainsFunc(sa.ServiceAccountUsers, func(u string) bool { return strings.EqualFold(u, caller.Email) })
}

// errSignScopes is the scope refusal of the signing method, which lists
// cloud-platform as the only scope that would do.
func errSignScopes() *apiError {
	e := errInsufficientScopes(methodSign)
	e.Header.Set("Www-Authenticate", googleAuthRealm+`, error="insufficient_scope", scope="`+ScopeCloudPlatform+`"`)
	return e
}

// SetServiceAccountUsers replaces who may act as the service account sa
// (roles/iam.serviceAccountUser on it), as an IAM policy change would.
func (e *Emulator) SetServiceAccountUsers(sa string, users []string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	a := e.lookupLocked(sa)
	if a == nil || !a.ServiceAccount {
		return fmt.Errorf("set service account users: %q is not a service account", sa)
	}
	for _, u := range users {
		if e.lookupLocked(u) == nil {
			return fmt.Errorf("set service account users of %s: unknown account %q", a.Email, u)
		}
	}
	a.ServiceAccountUsers = slices.Clone(users)
	return nil
}
