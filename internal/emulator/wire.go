package emulator

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
)

// Output shapes of the OS Login API (contract 1.5). int64 fields are JSON
// strings and unset fields are omitted, as proto3 JSON does.

type sshPublicKeyJSON struct {
	Key                string `json:"key,omitempty"`
	ExpirationTimeUsec int64  `json:"expirationTimeUsec,omitempty,string"`
	Fingerprint        string `json:"fingerprint,omitempty"`
	Name               string `json:"name,omitempty"`
}

type posixAccountJSON struct {
	Primary             bool   `json:"primary,omitempty"`
	Username            string `json:"username,omitempty"`
	UID                 int64  `json:"uid,omitempty,string"`
	GID                 int64  `json:"gid,omitempty,string"`
	HomeDirectory       string `json:"homeDirectory,omitempty"`
	AccountID           string `json:"accountId,omitempty"`
	OperatingSystemType string `json:"operatingSystemType,omitempty"`
	Name                string `json:"name,omitempty"`
}

type loginProfileJSON struct {
	Name          string                      `json:"name"`
	PosixAccounts []posixAccountJSON          `json:"posixAccounts,omitempty"`
	SSHPublicKeys map[string]sshPublicKeyJSON `json:"sshPublicKeys,omitempty"`
}

type importResponseJSON struct {
	LoginProfile loginProfileJSON `json:"loginProfile"`
	Details      string           `json:"details,omitempty"`
}

// sshPublicKeyIn is the request body of import, create and patch. Unknown
// fields and the output-only fingerprint and name are ignored.
type sshPublicKeyIn struct {
	Key                *string   `json:"key"`
	ExpirationTimeUsec jsonInt64 `json:"expirationTimeUsec"`
}

// jsonInt64 accepts an int64 as a JSON number or string, as Google's proto3
// JSON parser does (Google's own Python samples send numbers). null or an
// absent field leaves it unset.
type jsonInt64 struct {
	V   int64
	Set bool
}

func (j *jsonInt64) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if bytes.Equal(b, []byte("null")) {
		*j = jsonInt64{}
		return nil
	}
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		b = []byte(s)
	}
	v, err := strconv.ParseInt(string(b), 10, 64)
	if err != nil {
		return fmt.Errorf("invalid int64 value %s", b)
	}
	*j = jsonInt64{V: v, Set: true}
	return nil
}

func (a *account) posixJSON(project string) posixAccountJSON {
	p := a.posixAccount(project)
	return posixAccountJSON{
		Primary: true, Username: p.Username, UID: p.UID, GID: p.GID, HomeDirectory: p.HomeDirectory,
		AccountID: project, OperatingSystemType: "LINUX",
		Name: "users/" + a.Email + "/projects/" + project,
	}
}

func (a *account) keyJSON(k *storedKey) sshPublicKeyJSON {
	return sshPublicKeyJSON{Key: k.key, ExpirationTimeUsec: k.expiryUsec, Fingerprint: k.fp,
		Name: "users/" + a.Email + "/sshPublicKeys/" + k.fp}
}

// profileJSON renders the login profile. first, when set, is the project
// whose POSIX account goes first (the guest reads only posixAccounts[0]);
// keep filters the keys.
func (a *account) profileJSON(first string, keep func(*storedKey) bool) loginProfileJSON {
	p := loginProfileJSON{Name: a.UniqueID}
	if first != "" && a.hasProject(first) {
		p.PosixAccounts = append(p.PosixAccounts, a.posixJSON(first))
	}
	for _, proj := range a.projects {
		if proj != first {
			p.PosixAccounts = append(p.PosixAccounts, a.posixJSON(proj))
		}
	}
	for _, k := range a.keys {
		if keep != nil && !keep(k) {
			continue
		}
		if p.SSHPublicKeys == nil {
			p.SSHPublicKeys = map[string]sshPublicKeyJSON{}
		}
		p.SSHPublicKeys[k.fp] = a.keyJSON(k)
	}
	return p
}
