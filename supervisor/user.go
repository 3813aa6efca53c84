//go:build linux

package supervisor

import (
	"fmt"
	"os"
	"os/user"
	"strconv"
	"strings"
)

// User is who the children run as. hitless keeps its own privileges (to
// bind, to signal, to reap) and starts each child with these credentials,
// as systemd's User= and Group= give them to a service.
type User struct {
	Name   string   // the user's name, or its uid when it has none
	UID    uint32   //
	GID    uint32   // the primary group
	Groups []uint32 // supplementary groups; none clears hitless's own
	Home   string   // for HOME; empty when unknown
	Shell  string   // for SHELL; empty when unknown
}

// LookupUser parses "USER[:GROUP]", each a name or a number, as the
// --user flag takes it. Without GROUP the child gets the user's primary
// group and its supplementary groups from the user database; GROUP
// replaces the primary group. A uid the user database does not know needs
// its GROUP.
func LookupUser(spec string) (*User, error) {
	name, group, hasGroup := strings.Cut(spec, ":")
	if name == "" || hasGroup && group == "" {
		return nil, fmt.Errorf("%q: want USER or USER:GROUP, names or numbers", spec)
	}
	u := &User{Name: name}
	ent, err := user.Lookup(name)
	if err != nil {
		if _, nerr := strconv.Atoi(name); nerr == nil {
			ent, err = user.LookupId(name)
		}
	}
	switch {
	case err == nil:
		uid, _ := strconv.ParseUint(ent.Uid, 10, 32)
		gid, _ := strconv.ParseUint(ent.Gid, 10, 32)
		u.Name, u.UID, u.GID, u.Home = ent.Username, uint32(uid), uint32(gid), ent.HomeDir
		u.Shell = loginShell(ent.Username)
		ids, _ := ent.GroupIds()
		for _, id := range ids {
			if g, err := strconv.ParseUint(id, 10, 32); err == nil && uint32(g) != u.GID {
				u.Groups = append(u.Groups, uint32(g))
			}
		}
	default:
		uid, nerr := strconv.ParseUint(name, 10, 32)
		if nerr != nil {
			return nil, fmt.Errorf("no user %q%s (want a user name or uid)", name, nssNote)
		}
		if !hasGroup {
			return nil, fmt.Errorf("uid %d has no entry in the user database: give its group too, as %d:GROUP", uid, uid)
		}
		u.UID = uint32(uid)
	}
	if hasGroup {
		gid, err := lookupGroup(group)
		if err != nil {
			return nil, err
		}
		u.GID = gid
	}
	return u, nil
}

func lookupGroup(group string) (uint32, error) {
	if g, err := user.LookupGroup(group); err == nil {
		gid, _ := strconv.ParseUint(g.Gid, 10, 32)
		return uint32(gid), nil
	}
	gid, err := strconv.ParseUint(group, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("no group %q%s (want a group name or gid)", group, nssNote)
	}
	return uint32(gid), nil
}

// loginShell reads the user's shell from /etc/passwd, which os/user does
// not report.
func loginShell(name string) string {
	b, err := os.ReadFile("/etc/passwd")
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Split(line, ":"); len(f) == 7 && f[0] == name {
			return f[6]
		}
	}
	return ""
}

// String returns the user as --user takes it; "" for none.
func (u *User) String() string {
	if u == nil {
		return ""
	}
	return fmt.Sprintf("%s:%d", u.Name, u.GID)
}

// env is the environment a login as u would set, as systemd's User= does.
func (u *User) env() []string {
	env := []string{"USER=" + u.Name, "LOGNAME=" + u.Name}
	if u.Home != "" {
		env = append(env, "HOME="+u.Home)
	}
	if u.Shell != "" {
		env = append(env, "SHELL="+u.Shell)
	}
	return env
}
