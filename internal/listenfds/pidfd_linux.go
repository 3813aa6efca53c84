package listenfds

import (
	"fmt"
	"strconv"

	"golang.org/x/sys/unix"
)

// checkPIDFDID compares LISTEN_PIDFDID with the inode number of a pidfd for
// self, as libsystemd does. The number identifies a process without the
// pid-reuse race, but only on kernels whose pidfds live on pidfs (Linux
// 6.9 and later); elsewhere the check is skipped, again as libsystemd does.
func checkPIDFDID(s string, self int) error {
	want, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return fmt.Errorf("%s=%q: not a pidfd inode number", EnvPIDFDID, s)
	}
	fd, err := unix.PidfdOpen(self, 0)
	if err != nil {
		return nil
	}
	defer unix.Close(fd)
	var sfs unix.Statfs_t
	if err := unix.Fstatfs(fd, &sfs); err != nil || sfs.Type != unix.PID_FS_MAGIC {
		return nil
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil
	}
	if st.Ino != want {
		return fmt.Errorf("%w: %s=%d, this process's pidfd is %d", ErrWrongPID, EnvPIDFDID, want, st.Ino)
	}
	return nil
}
