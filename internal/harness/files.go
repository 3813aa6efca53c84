package harness

import (
	"io"
	"os"
)

// Install copies src to path as a deploy does: to a new file beside it
// (path.new, mode 0755), then renamed over it, so that the file of a
// running image is unlinked, not overwritten.
func Install(src, path string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	tmp := path + ".new"
	out, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// SameFile reports whether a and b, links followed, are the same file
// (the same device and inode); false if either cannot be stat'ed. With
// a = /proc/PID/exe it tells whether the process runs b.
func SameFile(a, b string) bool {
	sa, err := os.Stat(a)
	if err != nil {
		return false
	}
	sb, err := os.Stat(b)
	return err == nil && os.SameFile(sa, sb)
}
