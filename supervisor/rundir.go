//go:build linux

package supervisor

import (
	"encoding/base32"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// rundir is hitless's private directory in $TMPDIR, where its children's
// notify sockets live. Its mode is 0711: a child running as another user
// can reach the socket it was told of, but nobody can list the names,
// which are random. A lock file in it is locked (flock) for hitless's
// whole life, so that a directory whose lock can be taken belongs to a
// hitless that is gone, however it died, and the next one removes it.
type rundir struct {
	path string
	lock *os.File
}

const rundirPrefix = "hitless-"

func newRundir(log *slog.Logger) (*rundir, error) {
	base := os.TempDir()
	// Made under another name and renamed when locked, so that a sweep
	// never sees a directory of a live hitless without its lock held.
	tmp, err := os.MkdirTemp(base, ".new-"+rundirPrefix)
	if err != nil {
		return nil, err
	}
	lock, err := os.OpenFile(filepath.Join(tmp, "lock"), os.O_CREATE|os.O_RDWR|unix.O_NOFOLLOW, 0o600)
	if err == nil {
		err = unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB)
	}
	if err == nil {
		err = os.Chmod(tmp, 0o711)
	}
	d := &rundir{path: filepath.Join(base, rundirPrefix+randomText()), lock: lock}
	if err == nil {
		err = os.Rename(tmp, d.path)
	}
	if err != nil {
		if lock != nil {
			lock.Close()
		}
		os.RemoveAll(tmp)
		return nil, err
	}
	sweepRundirs(base, d.path, log)
	return d, nil
}

// sweepRundirs removes the directories of hitless processes that are
// gone: those of this user whose lock nobody holds.
func sweepRundirs(base, self string, log *slog.Logger) {
	dirs, _ := filepath.Glob(filepath.Join(base, rundirPrefix+"*"))
	for _, dir := range dirs {
		if dir == self || !staleRundir(dir) {
			continue
		}
		if err := os.RemoveAll(dir); err != nil {
			log.Warn("cannot remove the notify directory of a hitless that is gone", "dir", dir, "err", err)
		} else {
			log.Debug("removed the notify directory of a hitless that is gone", "dir", dir)
		}
	}
}

func staleRundir(dir string) bool {
	var st unix.Stat_t
	if err := unix.Lstat(dir, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFDIR || int(st.Uid) != os.Geteuid() {
		return false
	}
	fd, err := unix.Open(filepath.Join(dir, "lock"), unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return false // not one of ours, or from before locks: leave it
	}
	defer unix.Close(fd)
	return unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB) == nil
}

// socket returns a new, unguessable path in the directory for
// generation id's notify socket.
func (d *rundir) socket(id int) string {
	return filepath.Join(d.path, fmt.Sprintf("notify-%d-%s", id, randomText()))
}

func (d *rundir) remove() error {
	err := os.RemoveAll(d.path)
	return errors.Join(err, d.lock.Close())
}

// randomText returns 26 random base32 characters (130 bits), as
// crypto/rand.Text does, from getrandom(2): names nobody can guess
// (notify sockets a child of another user may not take over). Not
// crypto/rand itself, which links a FIPS random generator, AES and SHA-3
// into hitless for these few bytes.
func randomText() string {
	var b [17]byte
	for n := 0; n < len(b); {
		m, err := unix.Getrandom(b[n:], 0)
		if err != nil && err != unix.EINTR {
			panic("getrandom: " + err.Error()) // Linux 3.17 and later: as crypto/rand, no fallback
		}
		n += max(m, 0)
	}
	return base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:])[:26]
}
