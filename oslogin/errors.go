package oslogin

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"google.golang.org/api/googleapi"
)

var (
	// ErrKeyManagementBlocked means OS Login answered an import with success
	// but did not store the key: the Cloud Identity policy that lets users
	// manage their SSH keys through the OS Login API is off.
	ErrKeyManagementBlocked = errors.New("OS Login accepted the key but did not store it: an administrator policy blocks " +
		"SSH key management through the OS Login API for this account (Cloud Identity: " +
		"\"Allow users to manage their SSH public keys via the OS Login API\")")
	// ErrPermission means the account may not manage its OS Login profile.
	ErrPermission = errors.New("permission denied")
	// ErrScopes means the token lacks an OAuth scope OS Login requires.
	ErrScopes = errors.New("insufficient OAuth scopes")
	// ErrUnauthenticated means OS Login rejected the credentials themselves.
	ErrUnauthenticated = errors.New("credentials rejected")
)

// profileFullMessage is the text OS Login answers, with HTTP 400, when a key
// would push the login profile past its size limit.
const profileFullMessage = "Login profile size exceeds 32 KiB"

func isProfileFull(err error) bool {
	var gerr *googleapi.Error
	return errors.As(err, &gerr) && gerr.Code == http.StatusBadRequest && strings.Contains(gerr.Message, profileFullMessage)
}

func isNotFound(err error) bool {
	var gerr *googleapi.Error
	return errors.As(err, &gerr) && gerr.Code == http.StatusNotFound
}

// explain turns OS Login's refusals into errors that say what to change.
// Google's own text stays at the end for searching.
func (c *Client) explain(op string, err error) error {
	var gerr *googleapi.Error
	if !errors.As(err, &gerr) {
		return fmt.Errorf("oslogin: %s: %w", op, err)
	}
	err = apiError{gerr}
	switch gerr.Code {
	case http.StatusUnauthorized:
		return fmt.Errorf("oslogin: %s: %w: the token for %s was refused (expired, revoked or not for this service); "+
			"check the credentials: %w", op, ErrUnauthenticated, c.account, err)
	case http.StatusForbidden:
		if insufficientScopes(gerr) {
			return fmt.Errorf("oslogin: %s: %w: the token needs the cloud-platform or compute scope "+
				"(https://www.googleapis.com/auth/cloud-platform); on a VM, set its access scopes to cloud-platform: %w",
				op, ErrScopes, err)
		}
		return fmt.Errorf("oslogin: %s: %w: %s may not manage its OS Login profile in project %s; grant it "+
			"roles/compute.osLogin (or roles/compute.osAdminLogin for sudo) on the project and "+
			"roles/iam.serviceAccountUser on the VMs' service account, or impersonate an account that has them: %w",
			op, ErrPermission, c.account, c.project, err)
	}
	return fmt.Errorf("oslogin: %s: %w", op, err)
}

func insufficientScopes(gerr *googleapi.Error) bool {
	if strings.Contains(gerr.Message, "insufficient authentication scopes") {
		return true
	}
	for _, item := range gerr.Errors {
		if item.Reason == "insufficientPermissions" || item.Reason == "ACCESS_TOKEN_SCOPE_INSUFFICIENT" {
			return true
		}
	}
	return false
}

// apiError prints a Google API error on one line, as a command-line tool's
// error must be; googleapi.Error appends its details on further lines. The
// original stays reachable with errors.As.
type apiError struct{ err *googleapi.Error }

func (e apiError) Error() string {
	msg := fmt.Sprintf("googleapi: Error %d: %s", e.err.Code, strings.Join(strings.Fields(e.err.Message), " "))
	if len(e.err.Errors) == 1 && e.err.Errors[0].Reason != "" {
		msg += ", " + e.err.Errors[0].Reason
	}
	return msg
}

func (e apiError) Unwrap() error { return e.err }
