//go:build !linux

package harness

import "errors"

var errNoProc = errors.New("harness: reading processes needs Linux's /proc")

// ProcUsage reads pid's usage from /proc: Linux only.
func ProcUsage(pid int) (Usage, error) { return Usage{}, errNoProc }

// Children lists the processes whose parent is pid: Linux only.
func Children(pid int) (map[int]string, error) { return nil, errNoProc }

// Arg returns argument i of pid's command line: Linux only, "" elsewhere.
func Arg(pid, i int) string { return "" }

// Alive reports whether pid exists and is not a zombie; false off Linux.
func Alive(pid int) bool { return false }
