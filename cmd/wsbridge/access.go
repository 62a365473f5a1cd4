package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
)

// accessError explains a permission error on a keyring file, for the
// operator to act on: which file (what it is and where its name came
// from), the user this process runs as, who owns the file or the
// directory that stopped it, and what to change. write says the file was
// being written (a new file in its directory). It returns nil when err is
// no permission error.
func accessError(what, path, from string, write bool, err error) error {
	if !errors.Is(err, fs.ErrPermission) {
		return nil
	}
	me, meArg := userName(os.Geteuid())
	verb, target := "read", path
	if write {
		verb, target = "write", filepath.Dir(path)
	}
	name := what + " " + path
	if from != "" {
		name += " (" + from + ")"
	}
	st, statErr := os.Stat(target)
	switch {
	case statErr != nil && write:
		return explained(err, "keyring: cannot write the %s: permission denied to user %s, and its directory %s cannot be looked at (a directory above it is closed to %s): run this as root (sudo) or as the user the gateway runs as",
			name, me, target, me)
	case statErr != nil:
		return explained(err, "keyring: cannot read the %s: permission denied to user %s: a directory on its path is closed to %s: run this as root (sudo) or as the user the gateway runs as",
			name, me, me)
	}
	kind := "the file"
	if write {
		kind = "its directory " + target
	}
	owner, known := fileOwner(st)
	if !known {
		return explained(err, "keyring: cannot %s the %s: permission denied to user %s (%s mode %04o): run this as the owner of %s",
			verb, name, me, kind, st.Mode().Perm(), target)
	}
	ownerName, ownerArg := userName(owner)
	if owner > 0 && ownerArg == strconv.Itoa(owner) {
		ownerArg = "#" + ownerArg // sudo's spelling of a bare uid
	}
	who := ownerArg
	if owner > 0 && who[0] == '#' {
		who = "uid " + who[1:]
	}
	fix := fmt.Sprintf("run this as %s (sudo -u %s wsbridge ...)", who, ownerArg)
	if !write {
		// The key and keyring stay 0600: hand the file over rather than
		// open it to a group.
		fix += fmt.Sprintf(", or make the user that runs the gateway its owner: chown %s %s", meArg, shellQuote(target))
	}
	return explained(err, "keyring: cannot %s the %s: permission denied to user %s; %s belongs to %s, mode %04o: %s",
		verb, name, me, kind, ownerName, st.Mode().Perm(), fix)
}

// userName names a uid for a message: the user's name and the number, or
// the number alone where the user database does not know it (a systemd
// DynamicUser, a container's arbitrary uid); arg is how a command (chown)
// takes it.
func userName(uid int) (name, arg string) {
	if u, err := user.LookupId(strconv.Itoa(uid)); err == nil && u.Username != "" {
		return fmt.Sprintf("%s (uid %d)", u.Username, uid), u.Username
	}
	return fmt.Sprintf("uid %d", uid), strconv.Itoa(uid)
}

// explainedError is an error with a message of its own in place of its
// cause's, which errors.Is still finds.
type explainedError struct {
	msg   string
	cause error
}

func (e *explainedError) Error() string { return e.msg }
func (e *explainedError) Unwrap() error { return e.cause }

func explained(cause error, format string, args ...any) error {
	return &explainedError{msg: fmt.Sprintf(format, args...), cause: cause}
}
