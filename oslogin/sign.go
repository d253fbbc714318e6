package oslogin

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"golang.org/x/crypto/ssh"
)

// CertificateRequest names the key to certify and the one Compute Engine
// instance the certificate will be good for. Google binds a certificate to
// one VM (it records a fingerprint that the VM's principals command checks
// with oslogin/authorize), so there is one request per destination.
type CertificateRequest struct {
	// PublicKey is the authorized_keys line of the key to certify; it must
	// not itself be a certificate.
	PublicKey string
	Project   string
	Zone      string
	// InstanceID is the numeric instance id: computeInstance takes the id,
	// not the name.
	InstanceID string
	// ServiceAccount is the instance's attached service account e-mail, or
	// "" when it has none. Google signs with a wrong one anyway and the VM
	// then refuses the certificate, so it must come from the instance
	// record, never from a guess.
	ServiceAccount string
}

// ErrNoInstance means signSshPublicKey answered 404 even after the POSIX
// account was provisioned: the instance does not exist (any more) under
// that project, zone and id.
var ErrNoInstance = errors.New("no such instance")

// SignCertificate asks OS Login (v1 projects.locations.signSshPublicKey)
// for a certificate of req.PublicKey valid on one instance. The location is
// the instance's region, as gcloud and IAP Desktop send it. A 404 first
// means the caller has no POSIX account for the project yet (gcloud and IAP
// Desktop handle it the same way): the account is provisioned for that
// region and the call made once more. The answer is parsed and checked to
// certify the key that was sent, so a caller never serves a certificate
// for some other key.
func (c *Client) SignCertificate(ctx context.Context, req CertificateRequest) (*ssh.Certificate, error) {
	key, _, _, _, err := ssh.ParseAuthorizedKey([]byte(req.PublicKey))
	if err != nil {
		return nil, fmt.Errorf("sign certificate: public key: %w", err)
	}
	if req.Project == "" || req.Zone == "" || req.InstanceID == "" {
		return nil, fmt.Errorf("sign certificate: project, zone and instance id are required (got %q, %q, %q)", req.Project, req.Zone, req.InstanceID)
	}
	region := Region(req.Zone)
	parent := "projects/" + req.Project + "/locations/" + region
	body := &signSSHPublicKeyRequest{
		SSHPublicKey:    strings.TrimSpace(req.PublicKey),
		ComputeInstance: "projects/" + req.Project + "/zones/" + req.Zone + "/instances/" + req.InstanceID,
		ServiceAccount:  req.ServiceAccount,
	}
	sign := func() (*signSSHPublicKeyResponse, error) {
		var resp *signSSHPublicKeyResponse
		err := c.retry(ctx, "sign certificate", func(ctx context.Context) error {
			var err error
			resp, err = c.api.signSSHPublicKey(ctx, parent, body)
			return err
		})
		return resp, err
	}
	resp, err := sign()
	if isNotFound(err) {
		c.log.Info("no POSIX account for the project yet; provisioning it", "project", req.Project, "region", region)
		if perr := c.provision(ctx, req.Project, region); perr != nil {
			return nil, perr
		}
		resp, err = sign()
		if isNotFound(err) {
			return nil, fmt.Errorf("sign certificate for instance %s in %s/%s: %w (OS Login answered 404 after the POSIX account was provisioned): %w",
				req.InstanceID, req.Project, req.Zone, ErrNoInstance, readable(err))
		}
	}
	if err != nil {
		return nil, c.explainSign(req, err)
	}
	cert, err := parseSigned(resp.SignedSSHPublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("sign certificate for instance %s: %w", req.InstanceID, err)
	}
	return cert, nil
}

// provision creates the caller's POSIX account for project, waiting for it
// to reach region (users.projects.provisionPosixAccount).
func (c *Client) provision(ctx context.Context, project, region string) error {
	name := c.user + "/projects/" + project
	err := c.retry(ctx, "provision POSIX account", func(ctx context.Context) error {
		return c.api.provisionPosixAccount(ctx, name, &provisionPosixAccountRequest{Regions: []string{region}})
	})
	if err != nil {
		return c.explain("provision POSIX account", err)
	}
	return nil
}

// explainSign says what to change when signing is refused. The method
// accepts only the cloud-platform scope, and a 403 stands for either of
// two missing grants that Google does not tell apart.
func (c *Client) explainSign(req CertificateRequest, err error) error {
	var gerr *apiError
	if !errors.As(err, &gerr) || gerr.Code != http.StatusForbidden {
		return c.explain("sign certificate", err)
	}
	op := "sign certificate for instance " + req.InstanceID + " in " + req.Project + "/" + req.Zone
	if insufficientScopes(gerr) {
		return fmt.Errorf("%s: %w: signSshPublicKey accepts only the cloud-platform scope; give the credentials "+
			"https://www.googleapis.com/auth/cloud-platform (on a VM, its access scopes): %w", op, ErrScopes, gerr)
	}
	actAs := "the instance has no service account, so no actAs is needed"
	if req.ServiceAccount != "" {
		actAs = "roles/iam.serviceAccountUser (iam.serviceAccounts.actAs) on the instance's service account " + req.ServiceAccount
	}
	return fmt.Errorf("%s: %w: %s needs roles/compute.osLogin (or osAdminLogin) on the instance or project, and %s: %w",
		op, ErrPermission, c.account, actAs, gerr)
}

// parseSigned reads signedSshPublicKey, "<type>-cert-v01@openssh.com
// <base64> <username>", and checks that it is a user certificate of key.
func parseSigned(line string, key ssh.PublicKey) (*ssh.Certificate, error) {
	pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(line))
	if err != nil {
		return nil, fmt.Errorf("OS Login answered an unreadable certificate: %w", err)
	}
	cert, ok := pub.(*ssh.Certificate)
	if !ok {
		return nil, fmt.Errorf("OS Login answered a %s key, not a certificate", pub.Type())
	}
	if cert.CertType != ssh.UserCert {
		return nil, errors.New("OS Login answered a host certificate, not a user certificate")
	}
	if string(cert.Key.Marshal()) != string(key.Marshal()) {
		return nil, fmt.Errorf("OS Login answered a certificate for key %s, not for %s", ssh.FingerprintSHA256(cert.Key), ssh.FingerprintSHA256(key))
	}
	return cert, nil
}

// Region is the region of a zone: the zone without its last "-x".
func Region(zone string) string {
	if i := strings.LastIndexByte(zone, '-'); i > 0 {
		return zone[:i]
	}
	return zone
}
