// Package pidfile writes, reads and removes PID files.
//
// # Model
//
// Write replaces the file atomically: it writes a temporary file in the
// same directory and renames it over the target, so a reader (systemd,
// logrotate, a monitoring check) sees either the old pid or the new one,
// never an empty or half-written file. That matters because a reader may
// look at any moment, for instance right after a MAINPID= notification.
//
// # Limits
//
// A PID file is advisory: nothing stops two processes from writing the same
// path, and a pid read back may have been reused by an unrelated process
// after the writer died. Remove does not check whose pid the file holds.
// The directory must be on one filesystem with the file (it is: the
// temporary file is created next to it).
package pidfile

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Write atomically replaces the file at path with pid in decimal followed by
// a newline, mode 0644.
func Write(path string, pid int) error {
	if pid <= 0 {
		return fmt.Errorf("pidfile: write %s: invalid pid %d", path, pid)
	}
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	tmp, err := os.CreateTemp(dir, "."+base+".tmp*")
	if err != nil {
		return fmt.Errorf("pidfile: write %s: %w", path, err)
	}
	// From here on, any failure leaves no temporary file behind.
	fail := func(err error) error {
		tmp.Close()
		os.Remove(tmp.Name())
		return fmt.Errorf("pidfile: write %s: %w", path, err)
	}
	// CreateTemp makes the file 0600; a PID file is meant to be read by
	// others (monitoring, logrotate running as another user).
	if err := tmp.Chmod(0o644); err != nil {
		return fail(err)
	}
	if _, err := tmp.WriteString(strconv.Itoa(pid) + "\n"); err != nil {
		return fail(err)
	}
	// Sync before rename: otherwise a crash can leave the new name
	// pointing at an empty file on some filesystems.
	if err := tmp.Sync(); err != nil {
		return fail(err)
	}
	if err := tmp.Close(); err != nil {
		return fail(err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("pidfile: write %s: %w", path, err)
	}
	return nil
}

// Read returns the pid stored at path. It accepts surrounding whitespace,
// as PID files written by other tools may lack or add a newline.
func Read(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("pidfile: %w", err)
	}
	s := strings.TrimSpace(string(b))
	pid, err := strconv.Atoi(s)
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("pidfile: %s: %q is not a pid", path, truncate(s))
	}
	return pid, nil
}

// Remove removes the file at path. A file that is already gone is not an
// error: removal runs on the way out, possibly twice.
func Remove(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("pidfile: %w", err)
	}
	return nil
}

func truncate(s string) string {
	if len(s) > 32 {
		return s[:32] + "..."
	}
	return s
}
