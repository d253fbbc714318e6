package emulator

import (
	"context"
	"errors"
	"fmt"
	"net/http"
)

// ErrCertificatesRequired is AuthorizedKeys' refusal on a VM with
// enable-oslogin-certificates=TRUE. There the guest agent leaves
// AuthorizedKeysCommand out of sshd_config, so imported keys never work;
// the emulator's command answers nothing instead, so that a test sshd
// configured either way behaves as the real VM.
var ErrCertificatesRequired = errors.New("the instance requires OS Login certificates (enable-oslogin-certificates=TRUE): imported keys are not accepted")

// certificatesRequired reads enable-oslogin-certificates as the guest agent
// does: the instance's value wins over the project's.
func certificatesRequired(ctx context.Context, opts AuthorizedKeysOptions) (bool, error) {
	c, done, err := newMDSClient(opts, "")
	if err != nil {
		return false, err
	}
	defer done()
	for _, scope := range []string{"instance", "project"} {
		code, body, err := c.get(ctx, scope+"/attributes/"+MetaEnableCertificates)
		switch {
		case err != nil:
			return false, fmt.Errorf("read %s metadata %s: %w", scope, MetaEnableCertificates, err)
		case code == http.StatusOK:
			return MetadataTrue(string(body)), nil
		case code != http.StatusNotFound:
			return false, fmt.Errorf("read %s metadata %s: HTTP %d", scope, MetaEnableCertificates, code)
		}
	}
	return false, nil
}
