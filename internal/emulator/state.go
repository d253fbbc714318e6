package emulator

import (
	"crypto/rsa"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Key is one SSH public key as stored in a login profile.
type Key struct {
	Key         string    `json:"key"`
	Fingerprint string    `json:"fingerprint"`
	Expiry      time.Time `json:"expiry,omitzero"` // zero: never expires
}

// PosixAccount is one project's POSIX account of an identity.
type PosixAccount struct {
	ProjectID     string `json:"projectId"`
	Username      string `json:"username"`
	UID           int64  `json:"uid"`
	GID           int64  `json:"gid"`
	HomeDirectory string `json:"homeDirectory"`
}

// AccountState is an account with everything the emulator stores for it.
type AccountState struct {
	Account
	PosixAccounts []PosixAccount `json:"posixAccounts,omitempty"`
	Keys          []Key          `json:"keys,omitempty"`
}

// State is a snapshot of the emulator, as the admin API reports it.
type State struct {
	Now           time.Time      `json:"now"`
	ProjectID     string         `json:"projectId"`
	ProjectNumber string         `json:"projectNumber"`
	Accounts      []AccountState `json:"accounts"`
	Groups        []Group        `json:"groups,omitempty"`
}

// Fingerprint is the OS Login key id: lowercase hex SHA-256 of the exact key
// string, comment and trailing newline included (contract section 2).
func Fingerprint(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:])
}

type storedKey struct {
	key        string
	fp         string
	expiryUsec int64 // 0: no expiry (proto3 default value)
}

// account is the mutable state behind one Account; guarded by Emulator.mu.
type account struct {
	Account
	projects []string     // projects with a POSIX account, in creation order
	keys     []*storedKey // in insertion order
	saKeys   map[string]*rsa.PublicKey
}

func (a *account) username() string { return posixUsername(a.Account) }

func (a *account) hasProject(p string) bool { return slices.Contains(a.projects, p) }

func (a *account) key(fp string) *storedKey {
	for _, k := range a.keys {
		if k.fp == fp {
			return k
		}
	}
	return nil
}

func (a *account) removeKey(fp string) bool {
	n := len(a.keys)
	a.keys = slices.DeleteFunc(a.keys, func(k *storedKey) bool { return k.fp == fp })
	return len(a.keys) != n
}

// size is what counts against the profile limit: the stored key strings.
func (a *account) size() int {
	n := 0
	for _, k := range a.keys {
		n += len(k.key)
	}
	return n
}

// lookupLocked finds an account by e-mail (case-insensitive) or numeric id.
func (e *Emulator) lookupLocked(user string) *account {
	if a := e.byEmail[strings.ToLower(user)]; a != nil {
		return a
	}
	for _, a := range e.accounts {
		if a.UniqueID == user {
			return a
		}
	}
	return nil
}

func (e *Emulator) addAccountLocked(a Account) (*account, error) {
	existing := make([]Account, len(e.accounts))
	for i, o := range e.accounts {
		existing[i] = o.Account
	}
	n, err := normalizeAccount(a, existing)
	if err != nil {
		return nil, err
	}
	if err := e.checkAccountAgainstGroupsLocked(n); err != nil {
		return nil, err
	}
	acc := &account{Account: n, saKeys: map[string]*rsa.PublicKey{}}
	e.accounts = append(e.accounts, acc)
	e.byEmail[strings.ToLower(n.Email)] = acc
	return acc, nil
}

// purgeLocked removes keys that expired more than PurgeDelay ago, as the
// service cleans profiles on its own (contract 4.4).
func (e *Emulator) purgeLocked() {
	if e.cfg.PurgeDelay < 0 {
		return
	}
	cutoff := e.nowLocked().Add(-e.cfg.PurgeDelay)
	for _, a := range e.accounts {
		a.keys = slices.DeleteFunc(a.keys, func(k *storedKey) bool {
			return k.expiryUsec != 0 && time.UnixMicro(k.expiryUsec).Before(cutoff)
		})
	}
}

// ensurePosixLocked creates the account's POSIX account for project if missing.
func (e *Emulator) ensurePosixLocked(a *account, project string) {
	if project != "" && !a.hasProject(project) {
		a.projects = append(a.projects, project)
	}
}

// putKeyLocked stores key byte for byte (overwriting the expiry of an equal
// string) unless the profile would exceed the size limit.
func (e *Emulator) putKeyLocked(a *account, key string, expiryUsec int64) (*storedKey, error) {
	fp := Fingerprint(key)
	if k := a.key(fp); k != nil {
		k.expiryUsec = expiryUsec
		return k, nil
	}
	if e.cfg.ProfileLimit >= 0 && a.size()+len(key) > e.cfg.ProfileLimit {
		return nil, errProfileTooLarge()
	}
	k := &storedKey{key: key, fp: fp, expiryUsec: expiryUsec}
	a.keys = append(a.keys, k)
	return k, nil
}

func (a *account) posixAccount(project string) PosixAccount {
	u := a.username()
	return PosixAccount{ProjectID: project, Username: u, UID: a.UID, GID: a.UID, HomeDirectory: "/home/" + u}
}

func (k *storedKey) public() Key {
	out := Key{Key: k.key, Fingerprint: k.fp}
	if k.expiryUsec != 0 {
		out.Expiry = time.UnixMicro(k.expiryUsec).UTC()
	}
	return out
}

func (a *account) snapshot() AccountState {
	s := AccountState{Account: a.Account}
	for _, p := range a.projects {
		s.PosixAccounts = append(s.PosixAccounts, a.posixAccount(p))
	}
	for _, k := range a.keys {
		s.Keys = append(s.Keys, k.public())
	}
	return s
}

// Keys returns the keys currently stored for email (expired keys included
// until they are purged), or nil for an unknown account.
func (e *Emulator) Keys(email string) []Key {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.purgeLocked()
	a := e.lookupLocked(email)
	if a == nil {
		return nil
	}
	return a.snapshot().Keys
}

// State returns a snapshot of all accounts, POSIX accounts and keys.
func (e *Emulator) State() State {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.purgeLocked()
	s := State{Now: e.nowLocked(), ProjectID: e.cfg.ProjectID, ProjectNumber: e.cfg.ProjectNumber}
	for _, a := range e.accounts {
		s.Accounts = append(s.Accounts, a.snapshot())
	}
	for _, g := range e.groups {
		s.Groups = append(s.Groups, g.clone())
	}
	return s
}

// Accounts returns the normalised accounts (derived ids, usernames, uids).
func (e *Emulator) Accounts() []Account {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]Account, len(e.accounts))
	for i, a := range e.accounts {
		out[i] = a.Account
	}
	return out
}

// AddAccount adds an identity at run time, as creating a user or service
// account and granting it roles would.
func (e *Emulator) AddAccount(a Account) error {
	_, err := e.AddAccountNormalized(a)
	return err
}

// AddAccountNormalized is AddAccount returning the account with its derived
// unique id, username and uid filled in.
func (e *Emulator) AddAccountNormalized(a Account) (Account, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	acc, err := e.addAccountLocked(a)
	if err != nil {
		return Account{}, fmt.Errorf("add account: %w", err)
	}
	e.log.Debug("account added", "email", acc.Email, "username", acc.username(), "uid", acc.UID)
	return acc.Account, nil
}

// SetGrant sets what the VM's authorize endpoint answers for email, like
// granting roles/compute.osLogin (login) or roles/compute.osAdminLogin
// (adminLogin, which implies login).
func (e *Emulator) SetGrant(email string, login, adminLogin bool) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	a := e.lookupLocked(email)
	if a == nil {
		return fmt.Errorf("set grant: unknown account %q", email)
	}
	a.Login, a.AdminLogin = login || adminLogin, adminLogin
	return nil
}

// ProjectRoles are project-level roles beyond login; nil fields stay as
// they are.
type ProjectRoles struct {
	ComputeViewer *bool `json:"computeViewer,omitempty"` // roles/compute.viewer
	IAPTunnel     *bool `json:"iapTunnel,omitempty"`     // roles/iap.tunnelResourceAccessor
}

// SetProjectRoles grants or revokes project-level roles of email.
func (e *Emulator) SetProjectRoles(email string, r ProjectRoles) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	a := e.lookupLocked(email)
	if a == nil {
		return fmt.Errorf("set project roles: unknown account %q", email)
	}
	if r.ComputeViewer != nil {
		a.ComputeViewer = *r.ComputeViewer
	}
	if r.IAPTunnel != nil {
		a.IAPTunnel = *r.IAPTunnel
	}
	return nil
}

// ImportKey seeds a key as users.importSshPublicKey would (same validation,
// size limit and POSIX account creation) without going through HTTP, for
// tests that need a profile in place. projectID "" means the emulator's
// project; a zero expiry means none.
func (e *Emulator) ImportKey(email, projectID, key string, expiry time.Time) (Key, error) {
	if !validKey(key) {
		return Key{}, fmt.Errorf("import key: not an OpenSSH public key line: %q", key)
	}
	var usec int64
	if !expiry.IsZero() {
		usec = expiry.UnixMicro()
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.purgeLocked()
	a := e.lookupLocked(email)
	if a == nil {
		return Key{}, fmt.Errorf("import key: unknown account %q", email)
	}
	k, err := e.putKeyLocked(a, key, usec)
	if err != nil {
		return Key{}, fmt.Errorf("import key for %s: %w", email, err)
	}
	if projectID == "" {
		projectID = e.cfg.ProjectID
	}
	e.ensurePosixLocked(a, projectID)
	return k.public(), nil
}
