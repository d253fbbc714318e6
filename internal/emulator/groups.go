package emulator

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// Group is an OS Login POSIX group, as a Cloud Identity admin would define
// one for the VM's users. The guest's NSS module reads groups to give OS
// Login users supplementary groups and to fill its group cache.
type Group struct {
	Name string `json:"name"`
	// GID must be set explicitly: tests look groups up by it, so a derived
	// value would only hide what the VM sees.
	GID int64 `json:"gid"`
	// Members are account e-mails. Only members with a POSIX account are
	// served to the VM, as only they exist there.
	Members []string `json:"members,omitempty"`
}

// minGID keeps groups out of the range distributions reserve for system
// groups, as OS Login users are kept out of it (the guest refuses uid < 1000).
const minGID = 1000

// defaultGroupPageSize is used when the guest sends no pagesize, which it
// never does for groups?email= and users?groupname=. The real server's page
// size is not known; any value the guest can follow is faithful.
const defaultGroupPageSize = 100

// errUnknownGroup lets the admin API tell 404 from 400.
var errUnknownGroup = errors.New("unknown group")

// posixGroupJSON is one element of posixGroups. The guest accepts gid as a
// number or a string (ParseJsonToGroups); int64 fields go out as strings like
// every other int64 of the service.
type posixGroupJSON struct {
	Name string `json:"name"`
	GID  int64  `json:"gid,string"`
}

// guestGroupsJSON is the answer of oslogin/groups. PosixGroups is omitzero,
// not omitempty: nil leaves it out (the listing's "no groups at all"), an
// empty slice sends [] (a user in no group), because the guest reads the two
// differently (LoadJsonGroupsToCache versus ParseJsonToGroups).
type guestGroupsJSON struct {
	PosixGroups   []posixGroupJSON `json:"posixGroups,omitzero"`
	NextPageToken string           `json:"nextPageToken,omitempty"`
}

// guestGroupUsersJSON is the answer of oslogin/users?groupname=; the guest
// takes a missing usernames field as "no members" (ParseJsonToUsers).
type guestGroupUsersJSON struct {
	Usernames     []string `json:"usernames,omitempty"`
	NextPageToken string   `json:"nextPageToken"`
}

func (g Group) posixJSON() posixGroupJSON { return posixGroupJSON{Name: g.Name, GID: g.GID} }

func (g Group) clone() Group {
	g.Members = slices.Clone(g.Members)
	return g
}

// normalizeGroup validates g against the accounts and the other groups and
// returns it with members spelt as their accounts' e-mails. Names follow the
// guest's only name rule (kUserNameRegex), which also keeps ':' ',' and
// newlines out of the group cache file the guest writes. A group may not
// shadow a user's self-group, which the guest synthesises with the user's
// name and gid = uid.
func normalizeGroup(g Group, accounts []Account, others []Group) (Group, error) {
	if !usernameRE.MatchString(g.Name) {
		return g, fmt.Errorf("group %q: name does not match %s", g.Name, usernameRE)
	}
	if g.GID < minGID || g.GID > maxUID {
		return g, fmt.Errorf("group %s: gid %d outside [%d, %d]", g.Name, g.GID, minGID, int64(maxUID))
	}
	for _, o := range others {
		switch {
		case o.Name == g.Name:
			return g, fmt.Errorf("group %s: duplicate name", g.Name)
		case o.GID == g.GID:
			return g, fmt.Errorf("group %s: gid %d already used by group %s", g.Name, g.GID, o.Name)
		}
	}
	for _, a := range accounts {
		if a.UID == g.GID {
			return g, fmt.Errorf("group %s: gid %d is the self-group of %s", g.Name, g.GID, a.Email)
		}
		if posixUsername(a) == g.Name {
			return g, fmt.Errorf("group %s: name is the self-group of %s", g.Name, a.Email)
		}
	}
	members := make([]string, 0, len(g.Members))
	for _, m := range g.Members {
		i := slices.IndexFunc(accounts, func(a Account) bool { return strings.EqualFold(a.Email, m) })
		if i < 0 {
			return g, fmt.Errorf("group %s: member %q is not a known account", g.Name, m)
		}
		if slices.Contains(members, accounts[i].Email) {
			return g, fmt.Errorf("group %s: member %s listed twice", g.Name, accounts[i].Email)
		}
		members = append(members, accounts[i].Email)
	}
	g.Members = members
	return g, nil
}

// checkAccountAgainstGroupsLocked keeps an account added at run time from
// taking a group's name or gid as its self-group.
func (e *Emulator) checkAccountAgainstGroupsLocked(a Account) error {
	for _, g := range e.groups {
		if g.GID == a.UID {
			return fmt.Errorf("account %s: uid %d already used as gid by group %s", a.Email, a.UID, g.Name)
		}
		if g.Name == posixUsername(a) {
			return fmt.Errorf("account %s: username %s already used by group %s", a.Email, g.Name, g.Name)
		}
	}
	return nil
}

func (e *Emulator) accountValuesLocked() []Account {
	out := make([]Account, len(e.accounts))
	for i, a := range e.accounts {
		out[i] = a.Account
	}
	return out
}

func (e *Emulator) groupIndexLocked(name string) int {
	return slices.IndexFunc(e.groups, func(g Group) bool { return g.Name == name })
}

// Groups returns the POSIX groups in the order they were added.
func (e *Emulator) Groups() []Group {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []Group
	for _, g := range e.groups {
		out = append(out, g.clone())
	}
	return out
}

// AddGroup creates a POSIX group and returns it with members spelt as their
// accounts' e-mails.
func (e *Emulator) AddGroup(g Group) (Group, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	n, err := normalizeGroup(g.clone(), e.accountValuesLocked(), e.groups)
	if err != nil {
		return Group{}, fmt.Errorf("add group: %w", err)
	}
	e.groups = append(e.groups, n)
	return n.clone(), nil
}

// DeleteGroup removes the POSIX group name.
func (e *Emulator) DeleteGroup(name string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	i := e.groupIndexLocked(name)
	if i < 0 {
		return fmt.Errorf("delete group %q: %w", name, errUnknownGroup)
	}
	e.groups = slices.Delete(e.groups, i, i+1)
	return nil
}

// SetGroupMembers replaces the members of group name by the accounts with
// the given e-mails.
func (e *Emulator) SetGroupMembers(name string, emails []string) (Group, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	i := e.groupIndexLocked(name)
	if i < 0 {
		return Group{}, fmt.Errorf("set members of group %q: %w", name, errUnknownGroup)
	}
	others := slices.Delete(slices.Clone(e.groups), i, i+1)
	n, err := normalizeGroup(Group{Name: name, GID: e.groups[i].GID, Members: slices.Clone(emails)}, e.accountValuesLocked(), others)
	if err != nil {
		return Group{}, fmt.Errorf("set members: %w", err)
	}
	e.groups[i] = n
	return n.clone(), nil
}

// literalQueryValue reads key from a raw query without turning '+' into a
// space. The guest builds groups?email= without URL-encoding the value
// (GetGroupsForUser), so an e-mail such as first.last+tag@example.com
// arrives with a literal plus; %XX escapes still decode.
func literalQueryValue(rawQuery, key string) (string, bool) {
	for _, kv := range strings.Split(rawQuery, "&") {
		k, v, _ := strings.Cut(kv, "=")
		if k != key {
			continue
		}
		s, err := url.PathUnescape(v)
		if err != nil {
			return "", false
		}
		return s, true
	}
	return "", false
}

// groupPage parses pagesize and pagetoken (an offset, as in oslogin/users)
// for a list of n items and returns the window to serve and the token to
// send. Unlike oslogin/users, the page that reaches the end carries "0"
// itself: the guest's group cache treats a "0" page as the last one and
// reads its groups (LoadJsonGroupsToCache), and answers a later page without
// posixGroups as "no groups", which would drop the cache it just built.
func groupPage(q url.Values, n, defaultSize int) (start, end int, next string, ok bool) {
	size := defaultSize
	if q.Has("pagesize") {
		s, err := strconv.Atoi(q.Get("pagesize"))
		if err != nil || s <= 0 {
			return 0, 0, "", false
		}
		size = s
	}
	if t := q.Get("pagetoken"); t != "" {
		o, err := strconv.Atoi(t)
		if err != nil || o < 0 {
			return 0, 0, "", false
		}
		start = o
	}
	start = min(start, n)
	end = min(start+size, n)
	next = "0"
	if end < n {
		next = strconv.Itoa(end)
	}
	return start, end, next, true
}

// isVisible is the rule of oslogin/users: an account exists on the VM once
// it has a POSIX account.
func isVisible(a *account) bool { return a != nil && len(a.projects) > 0 }

// groupsAnswerLocked answers oslogin/groups: one group by groupname or gid,
// the groups of one user by email, or all groups by pagesize.
func (e *Emulator) groupsAnswerLocked(q url.Values) (int, any) {
	selectors := 0
	for _, k := range []string{"email", "groupname", "gid"} {
		if q.Has(k) {
			selectors++
		}
	}
	if selectors > 1 {
		return http.StatusBadRequest, nil
	}
	one := func(match func(Group) bool) (int, any) {
		for _, g := range e.groups {
			if match(g) {
				return http.StatusOK, guestGroupsJSON{PosixGroups: []posixGroupJSON{g.posixJSON()}}
			}
		}
		return http.StatusNotFound, nil
	}

	switch {
	case q.Has("groupname"):
		name := q.Get("groupname")
		if name == "" {
			return http.StatusBadRequest, nil
		}
		return one(func(g Group) bool { return g.Name == name })

	case q.Has("gid"):
		gid, err := strconv.ParseInt(q.Get("gid"), 10, 64)
		if err != nil {
			return http.StatusBadRequest, nil
		}
		return one(func(g Group) bool { return g.GID == gid })

	case q.Has("email"):
		// email is the profile name oslogin/users returned (the numeric id)
		// or an e-mail, as for authorize.
		if q.Get("email") == "" {
			return http.StatusBadRequest, nil
		}
		a := e.lookupLocked(q.Get("email"))
		if !isVisible(a) {
			return http.StatusNotFound, nil
		}
		var mine []posixGroupJSON
		for _, g := range e.groups {
			if slices.Contains(g.Members, a.Email) {
				mine = append(mine, g.posixJSON())
			}
		}
		start, end, next, ok := groupPage(q, len(mine), defaultGroupPageSize)
		if !ok {
			return http.StatusBadRequest, nil
		}
		// Never nil: the guest fails a user's lookup on a page without
		// posixGroups (ParseJsonToGroups), so "no groups" is [].
		page := append([]posixGroupJSON{}, mine[start:end]...)
		return http.StatusOK, guestGroupsJSON{PosixGroups: page, NextPageToken: next}

	case q.Has("pagesize"):
		start, end, next, ok := groupPage(q, len(e.groups), defaultGroupPageSize)
		if !ok {
			return http.StatusBadRequest, nil
		}
		// nil when empty: the guest reads a page without posixGroups as
		// "no groups", but fails the refresh on an empty array.
		var page []posixGroupJSON
		for _, g := range e.groups[start:end] {
			page = append(page, g.posixJSON())
		}
		return http.StatusOK, guestGroupsJSON{PosixGroups: page, NextPageToken: next}
	}
	return http.StatusBadRequest, nil
}

// groupUsersLocked answers oslogin/users?groupname=: the usernames of the
// group's members that exist on the VM, paged until nextPageToken "0"
// (GetUsersForGroup reads the usernames of every page, the last included).
func (e *Emulator) groupUsersLocked(q url.Values) (int, any) {
	name := q.Get("groupname")
	if name == "" {
		return http.StatusBadRequest, nil
	}
	i := e.groupIndexLocked(name)
	if i < 0 {
		return http.StatusNotFound, nil
	}
	var names []string
	for _, m := range e.groups[i].Members {
		if a := e.lookupLocked(m); isVisible(a) {
			names = append(names, a.username())
		}
	}
	start, end, next, ok := groupPage(q, len(names), defaultGroupPageSize)
	if !ok {
		return http.StatusBadRequest, nil
	}
	return http.StatusOK, guestGroupUsersJSON{Usernames: names[start:end], NextPageToken: next}
}
