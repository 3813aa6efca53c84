package harness

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// ProcUsage reads pid's usage from /proc.
func ProcUsage(pid int) (Usage, error) {
	var u Usage
	dir := "/proc/" + strconv.Itoa(pid)
	status, err := os.ReadFile(dir + "/status")
	if err != nil {
		return u, err
	}
	if u.RSS, err = kbField(status, "VmRSS:"); err != nil {
		return u, fmt.Errorf("%s/status: %w", dir, err)
	}
	if u.Anon, err = kbField(status, "RssAnon:"); err != nil {
		return u, fmt.Errorf("%s/status: %w", dir, err)
	}
	// smaps_rollup needs Linux 4.14 and the right to read the process's
	// maps: without it, PSS stays 0.
	if rollup, err := os.ReadFile(dir + "/smaps_rollup"); err == nil {
		u.PSS, _ = kbField(rollup, "Pss:")
	}
	f, err := statFields(pid)
	if err != nil {
		return u, err
	}
	// After the command: state(0) ppid(1) … utime(11) stime(12), in
	// clock ticks, which Linux fixes at 100 a second for /proc.
	if len(f) > 12 {
		ut, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		u.CPU = time.Duration(ut+st) * time.Second / 100
	}
	if len(f) > 14 {
		cut, _ := strconv.ParseInt(f[13], 10, 64)
		cst, _ := strconv.ParseInt(f[14], 10, 64)
		u.ChildCPU = time.Duration(cut+cst) * time.Second / 100
	}
	ents, err := os.ReadDir(dir + "/fd")
	if err != nil {
		return u, err
	}
	u.FDs = len(ents)
	return u, nil
}

// kbField reads the field named key ("VmRSS:") of a /proc file of
// "key: N kB" lines, in bytes.
func kbField(b []byte, key string) (int64, error) {
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, key); ok {
			f := strings.Fields(v) // "1234 kB"
			if len(f) == 0 {
				return 0, fmt.Errorf("%s %q", key, v)
			}
			kb, err := strconv.ParseInt(f[0], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("%s %w", key, err)
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("no %s", key)
}

// Children lists the processes whose parent is pid, zombies included,
// with their state letter (R, S, Z, …).
func Children(pid int) (map[int]string, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	parent := strconv.Itoa(pid)
	out := map[int]string{}
	for _, e := range ents {
		cpid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		f, err := statFields(cpid)
		if err != nil {
			continue // gone since the listing
		}
		if len(f) > 2 && f[1] == parent {
			out[cpid] = f[0]
		}
	}
	return out, nil
}

// Arg returns argument i of pid's command line (0 is the program as it
// was started), "" if it has none or is gone: how hitless's helpers, its
// own binary in a hidden mode, are told apart from its children.
func Arg(pid, i int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		return ""
	}
	if args := strings.Split(string(b), "\x00"); i < len(args) {
		return args[i]
	}
	return ""
}

// Alive reports whether pid exists and is not a zombie.
func Alive(pid int) bool {
	f, err := statFields(pid)
	return err == nil && len(f) > 0 && f[0] != "Z"
}

// statFields returns the fields of /proc/PID/stat after the command, whose
// name may hold spaces and parentheses.
func statFields(pid int) ([]string, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return nil, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return nil, fmt.Errorf("/proc/%d/stat: no command", pid)
	}
	return strings.Fields(string(b[i+1:])), nil
}
