//go:build linux

package control

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/hitless/hitless/internal/unixsock"
)

// EnvControl names the environment variable that overrides the default
// control socket path, for "hitless run" and the clients alike.
const EnvControl = "HITLESS_CONTROL"

// MaxPath is the longest path a unix socket can be bound to or reached
// at: unixsock.MaxPath, 107 bytes on Linux (sun_path holds 108 bytes
// including the terminating NUL).
const MaxPath = unixsock.MaxPath

// maxName is the longest service name: it becomes a file name (NAME.sock)
// and appears in log lines, so it stays short and needs no quoting.
const maxName = 64

// nameChar reports whether c may appear in a service name.
func nameChar(c byte) bool {
	return alnum(c) || c == '.' || c == '_' || c == '@' || c == '-'
}

func alnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// CheckName reports whether name can be a service name: letters, digits
// and . _ @ -, starting with a letter or digit, at most 64 characters. It
// is the rule for --name and for the "name" key of the config file.
func CheckName(name string) error {
	ok := name != "" && len(name) <= maxName && alnum(name[0])
	for i := 0; ok && i < len(name); i++ {
		ok = nameChar(name[i])
	}
	if !ok {
		return fmt.Errorf("%q is not a service name (want letters, digits, and . _ @ - , starting with a letter or digit, at most %d characters)", name, maxName)
	}
	return nil
}

// NameFromCommand derives a service name from a program path: its base
// name, with any character CheckName refuses replaced by '_'.
// "/srv/app/current/bin/orders-api" gives "orders-api".
func NameFromCommand(prog string) string {
	b := []byte(filepath.Base(prog))
	for i, c := range b {
		if !nameChar(c) {
			b[i] = '_'
		}
	}
	name := strings.TrimLeft(string(b), "._@-")
	if len(name) > maxName {
		name = name[:maxName]
	}
	if name == "" {
		return "hitless"
	}
	return name
}

// DefaultDir is where control sockets go when no path is given:
//
//	$XDG_RUNTIME_DIR/hitless   if XDG_RUNTIME_DIR is set (an absolute path)
//	/run/hitless               for root
//	$TMPDIR/hitless-UID        otherwise ($TMPDIR defaults to /tmp)
func DefaultDir() string {
	if x := os.Getenv("XDG_RUNTIME_DIR"); filepath.IsAbs(x) {
		return filepath.Join(x, "hitless")
	}
	if os.Geteuid() == 0 {
		return "/run/hitless"
	}
	return filepath.Join(os.TempDir(), "hitless-"+strconv.Itoa(os.Geteuid()))
}

// DefaultPath is the control socket of the service called name:
// $HITLESS_CONTROL if set, else DefaultDir()/NAME.sock.
func DefaultPath(name string) string {
	if p := os.Getenv(EnvControl); p != "" {
		return p
	}
	return filepath.Join(DefaultDir(), name+".sock")
}

// CheckPath refuses a path no unix socket can have.
func CheckPath(path string) error {
	switch {
	case path == "":
		return errors.New("empty control socket path")
	case len(path) > MaxPath:
		return fmt.Errorf("control socket path %q is %d bytes long; unix socket paths are limited to %d bytes: choose a shorter --control", path, len(path), MaxPath)
	case strings.IndexByte(path, 0) >= 0:
		return fmt.Errorf("control socket path %q contains a NUL byte", path)
	}
	return nil
}

// ErrAmbiguous is returned by Resolve when the default directory holds
// several control sockets and nothing says which one is meant.
var ErrAmbiguous = errors.New("several hitless control sockets")

// Resolve finds the control socket a client should talk to: path if given;
// else $HITLESS_CONTROL; else DefaultDir()/NAME.sock if name is given;
// else the only socket in DefaultDir(). Errors from the last case wrap
// ErrAmbiguous when there are several, or os.ErrNotExist when there is none.
func Resolve(path, name string) (string, error) {
	if path != "" {
		return path, nil
	}
	if name != "" {
		if err := CheckName(name); err != nil {
			return "", fmt.Errorf("--name: %w", err)
		}
		return DefaultPath(name), nil
	}
	if p := os.Getenv(EnvControl); p != "" {
		return p, nil
	}
	dir := DefaultDir()
	ents, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("look for control sockets in %s: %w", dir, err)
	}
	var socks []string
	for _, e := range ents {
		if e.Type()&os.ModeSocket != 0 && strings.HasSuffix(e.Name(), ".sock") {
			socks = append(socks, e.Name())
		}
	}
	if len(socks) > 1 {
		// Sockets left by a hitless that was killed do not count.
		if live, ok := listening(); ok {
			socks = slices.DeleteFunc(socks, func(n string) bool { return !live[filepath.Join(dir, n)] })
		}
	}
	switch len(socks) {
	case 1:
		return filepath.Join(dir, socks[0]), nil
	case 0:
		return "", &notFound{fmt.Sprintf("no hitless control socket in %s (is hitless running, as this user? give --control PATH, or --name NAME as given to hitless run, where it defaults to the base name of the command)", dir)}
	default:
		slices.Sort(socks)
		return "", fmt.Errorf("%w in %s (%s): choose one with --name NAME or --control PATH", ErrAmbiguous, dir, strings.Join(socks, ", "))
	}
}

// listening returns the paths of the listening unix sockets of this
// network namespace, from /proc/net/unix; false if it cannot be read.
func listening() (map[string]bool, bool) {
	b, err := os.ReadFile("/proc/net/unix")
	if err != nil {
		return nil, false
	}
	live := map[string]bool{}
	// Num RefCount Protocol Flags Type St Inode Path; Flags 00010000 is
	// __SO_ACCEPTCON, a listening socket.
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) >= 8 && f[3] == "00010000" {
			live[strings.Join(f[7:], " ")] = true
		}
	}
	return live, true
}

// notFound is Resolve's error when there is no socket; it wraps
// os.ErrNotExist without saying "file does not exist" again.
type notFound struct{ msg string }

func (e *notFound) Error() string        { return e.msg }
func (e *notFound) Is(target error) bool { return target == os.ErrNotExist }
