package childproc

import (
	"errors"
	"math"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestParseFDNames(t *testing.T) {
	for _, tc := range []struct {
		in      string
		set     bool
		n       int
		want    []string
		wantErr bool
	}{
		{"", false, 2, []string{"unknown", "unknown"}, false},
		{"", true, 1, []string{"unknown"}, false},
		{"http", true, 1, []string{"http"}, false},
		{"http:admin:dns", true, 3, []string{"http", "admin", "dns"}, false},
		{"http::dns", true, 3, []string{"http", "", "dns"}, false},
		{"http:admin", true, 3, nil, true},
		{"a:b:c", true, 2, nil, true},
		{"x", true, 0, nil, true},
	} {
		got, err := parseFDNames(tc.in, tc.set, tc.n)
		if (err != nil) != tc.wantErr {
			t.Errorf("parseFDNames(%q, %v, %d) error = %v, want error %v", tc.in, tc.set, tc.n, err, tc.wantErr)
			continue
		}
		if strings.Join(got, "|") != strings.Join(tc.want, "|") {
			t.Errorf("parseFDNames(%q, %v, %d) = %q, want %q", tc.in, tc.set, tc.n, got, tc.want)
		}
	}
}

func TestParseCountAndPID(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int
		ok   bool
	}{{"0", 0, true}, {"3", 3, true}, {"-1", 0, false}, {"+3", 0, false}, {"x", 0, false}, {"", 0, false}, {"99999999", 0, false}, {"-0", 0, false}, {" 3", 0, false}} {
		got, err := parseCount(envListenFDs, tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("parseCount(%q) = %d, %v; want %d, ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
	}
	if err := parseListenPID("42", true, 42); err != nil {
		t.Errorf("matching pid: %v", err)
	}
	for _, tc := range []struct {
		in       string
		set      bool
		wrongPID bool
	}{{"43", true, true}, {"", false, true}, {"abc", true, false}, {"0", true, false}, {"-42", true, false}} {
		err := parseListenPID(tc.in, tc.set, 42)
		if err == nil {
			t.Errorf("parseListenPID(%q, %v) = nil, want error", tc.in, tc.set)
			continue
		}
		if got := strings.Contains(err.Error(), errWrongPID.Error()); got != tc.wrongPID {
			t.Errorf("parseListenPID(%q): %v; errWrongPID=%v, want %v", tc.in, err, got, tc.wrongPID)
		}
	}
}

func TestParseServerStarterPort(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string // addr=fd joined by ;
		ok   bool
	}{
		{"0.0.0.0:80=3", "0.0.0.0:80=3", true},
		{"0.0.0.0:80=3;/run/app.sock=4", "0.0.0.0:80=3;/run/app.sock=4", true},
		{"8080=5", "8080=5", true},
		{"[::1]:8080=6;", "[::1]:8080=6", true},
		{"/tmp/a=b.sock=7", "/tmp/a=b.sock=7", true},
		{"", "", false},
		{";", "", false},
		{"8080", "", false},
		{"=3", "", false},
		{"8080=x", "", false},
		{"8080=-1", "", false},
		{"8080=3;9090", "", false},
	} {
		got, err := parseServerStarterPort(tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("parseServerStarterPort(%q) error = %v, want ok=%v", tc.in, err, tc.ok)
			continue
		}
		if err == nil && encodeStarter(got) != tc.want {
			t.Errorf("parseServerStarterPort(%q) = %q, want %q", tc.in, encodeStarter(got), tc.want)
		}
	}
}

func encodeStarter(es []starterEntry) string {
	parts := make([]string, len(es))
	for i, e := range es {
		parts[i] = e.addr + "=" + strconv.Itoa(e.fd)
	}
	return strings.Join(parts, ";")
}

func envMap(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestParseEinhorn(t *testing.T) {
	for _, tc := range []struct {
		env   map[string]string
		want  string
		ok    bool
		isErr bool
	}{
		{map[string]string{}, "", false, false},
		{map[string]string{"EINHORN_FD_COUNT": "2", "EINHORN_FD_0": "5", "EINHORN_FD_1": "7"}, "5 7", true, false},
		{map[string]string{"EINHORN_FD_COUNT": "0"}, "", true, false},
		{map[string]string{"EINHORN_FD_COUNT": "2", "EINHORN_FD_0": "5"}, "", true, true},
		{map[string]string{"EINHORN_FD_COUNT": "1", "EINHORN_FD_0": "five"}, "", true, true},
		{map[string]string{"EINHORN_FD_COUNT": "x"}, "", true, true},
		{map[string]string{"EINHORN_FDS": "3 4  6"}, "3 4 6", true, false},
		{map[string]string{"EINHORN_FDS": "3 x"}, "", true, true},
		// The counted form wins over the deprecated one.
		{map[string]string{"EINHORN_FD_COUNT": "1", "EINHORN_FD_0": "9", "EINHORN_FDS": "3 4"}, "9", true, false},
	} {
		fds, ok, err := parseEinhorn(envMap(tc.env))
		if ok != tc.ok || (err != nil) != tc.isErr {
			t.Errorf("parseEinhorn(%v) = %v, %v, %v; want ok=%v err=%v", tc.env, fds, ok, err, tc.ok, tc.isErr)
			continue
		}
		var s []string
		for _, fd := range fds {
			s = append(s, strconv.Itoa(fd))
		}
		if err == nil && strings.Join(s, " ") != tc.want {
			t.Errorf("parseEinhorn(%v) = %v, want %s", tc.env, fds, tc.want)
		}
	}
}

func TestNotifyPayload(t *testing.T) {
	for _, tc := range []struct{ state, status, want string }{
		{"READY=1", "", "READY=1"},
		{"READY=1", "serving", "READY=1\nSTATUS=serving"},
		{"READY=1", "a\nSTOPPING=1", "READY=1\nSTATUS=a STOPPING=1"},
		{"READY=1", " x\r\n\x00y ", "READY=1\nSTATUS=x   y"},
		{"READY=1", "\xff", "READY=1\nSTATUS=\uFFFD"},
		{"STOPPING=1", "draining", "STOPPING=1\nSTATUS=draining"},
	} {
		if got := notifyPayload(tc.state, tc.status); got != tc.want {
			t.Errorf("notifyPayload(%q, %q) = %q, want %q", tc.state, tc.status, got, tc.want)
		}
	}
}

func FuzzParseFDNames(f *testing.F) {
	for _, s := range []string{"", "http", "http:admin", "a::b", ":", "unknown:stored:connection"} {
		f.Add(s, 2)
	}
	f.Fuzz(func(t *testing.T, s string, n int) {
		if n < 0 || n > 1000 {
			return
		}
		names, err := parseFDNames(s, true, n)
		if err != nil {
			return
		}
		if len(names) != n {
			t.Fatalf("parseFDNames(%q, %d) returned %d names", s, n, len(names))
		}
		if s != "" && strings.Join(names, ":") != s {
			t.Fatalf("parseFDNames(%q) = %q does not round-trip", s, names)
		}
	})
}

func FuzzParseServerStarterPort(f *testing.F) {
	for _, s := range []string{"0.0.0.0:80=3;/run/app.sock=4", "8080=5", "[::1]:8080=6;", "a=b=3", ";;", "=3"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		entries, err := parseServerStarterPort(s)
		if err != nil {
			return
		}
		if len(entries) == 0 {
			t.Fatalf("parseServerStarterPort(%q): no entries and no error", s)
		}
		for _, e := range entries {
			if e.fd < 0 || e.addr == "" || strings.Contains(e.addr, ";") {
				t.Fatalf("parseServerStarterPort(%q): bad entry %+v", s, e)
			}
		}
		// Re-encoding and parsing again gives the same entries.
		again, err := parseServerStarterPort(encodeStarter(entries))
		if err != nil || encodeStarter(again) != encodeStarter(entries) {
			t.Fatalf("parseServerStarterPort(%q): re-encoded %q parses to %v, %v", s, encodeStarter(entries), again, err)
		}
	})
}

func FuzzParseEinhorn(f *testing.F) {
	f.Add("2", "5", "7", "", true)
	f.Add("", "", "", "3 4 5", false)
	f.Add("1", "x", "", "", true)
	f.Fuzz(func(t *testing.T, count, fd0, fd1, fds string, counted bool) {
		env := map[string]string{"EINHORN_FD_0": fd0, "EINHORN_FD_1": fd1, "EINHORN_FDS": fds}
		if counted {
			env["EINHORN_FD_COUNT"] = count
		}
		got, ok, err := parseEinhorn(envMap(env))
		if !ok {
			t.Fatalf("parseEinhorn(%v): not ok with EINHORN_FDS set", env)
		}
		if err != nil {
			return
		}
		for _, fd := range got {
			if fd < 0 {
				t.Fatalf("parseEinhorn(%v): negative fd %d", env, fd)
			}
		}
		if counted {
			if n, _ := strconv.Atoi(count); len(got) != n {
				t.Fatalf("parseEinhorn(%v): %d fds for count %q", env, len(got), count)
			}
		}
	})
}

func FuzzNotifyPayload(f *testing.F) {
	for _, s := range []string{"", "serving", "a\nSTOPPING=1", "\x00", "\xff\xfe", " spaced "} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, status string) {
		p := notifyPayload("READY=1", status)
		lines := strings.Split(p, "\n")
		if lines[0] != "READY=1" || len(lines) > 2 {
			t.Fatalf("notifyPayload(%q) = %q: want READY=1 and at most one STATUS line", status, p)
		}
		if len(lines) == 2 {
			st, ok := strings.CutPrefix(lines[1], "STATUS=")
			if !ok || st == "" || strings.ContainsAny(st, "\r\x00") || !utf8.ValidString(st) {
				t.Fatalf("notifyPayload(%q) = %q: bad STATUS line", status, p)
			}
		}
	})
}

// isDecimal reports whether s is a plain decimal number: digits only, no
// sign, no spaces. It is the spec the count and pid parsers are held to.
func isDecimal(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

func FuzzParseCount(f *testing.F) {
	for _, s := range []string{"0", "3", "007", "65536", "65537", "-1", "-0", "+3", " 3", "3 ", "0x10", "1_000", "99999999999999999999", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := parseCount(envListenFDs, s)
		v, perr := strconv.ParseUint(s, 10, 64)
		want := isDecimal(s) && perr == nil && v <= maxInheritedFDs
		if (err == nil) != want {
			t.Fatalf("parseCount(%q) = %d, %v; want accepted=%v", s, n, err, want)
		}
		if err != nil {
			if n != 0 || !strings.Contains(err.Error(), envListenFDs) {
				t.Fatalf("parseCount(%q) = %d, %v: want 0 and an error naming %s", s, n, err, envListenFDs)
			}
			return
		}
		if uint64(n) != v {
			t.Fatalf("parseCount(%q) = %d, want %d", s, n, v)
		}
		if again, err := parseCount(envListenFDs, strconv.Itoa(n)); err != nil || again != n {
			t.Fatalf("parseCount(%q) = %d, but %q parses to %d, %v", s, n, strconv.Itoa(n), again, err)
		}
	})
}

func FuzzParseListenPID(f *testing.F) {
	for _, s := range []string{"42", "042", "43", "0", "-42", "-0", "+42", " 42", "4294967338", "99999999999999999999", "x", ""} {
		f.Add(s, 42)
	}
	f.Fuzz(func(t *testing.T, s string, self int) {
		if self <= 0 {
			return // pids are positive
		}
		if err := parseListenPID(strconv.Itoa(self), true, self); err != nil {
			t.Fatalf("parseListenPID(%d, self %d) = %v", self, self, err)
		}
		if err := parseListenPID(s, false, self); !errors.Is(err, errWrongPID) {
			t.Fatalf("parseListenPID unset = %v, want errWrongPID", err)
		}
		err := parseListenPID(s, true, self)
		v, perr := strconv.ParseUint(s, 10, 64)
		isPID := isDecimal(s) && perr == nil && v > 0 && v <= math.MaxInt
		switch {
		case !isPID:
			// A malformed variable is an error to report, not a sign
			// that the descriptors were meant for another process.
			if err == nil || errors.Is(err, errWrongPID) || !strings.Contains(err.Error(), envListenPID) {
				t.Fatalf("parseListenPID(%q, self %d) = %v; want a format error", s, self, err)
			}
		case v == uint64(self):
			if err != nil {
				t.Fatalf("parseListenPID(%q, self %d) = %v; want it accepted", s, self, err)
			}
		default:
			if !errors.Is(err, errWrongPID) {
				t.Fatalf("parseListenPID(%q, self %d) = %v; want errWrongPID", s, self, err)
			}
		}
	})
}

func FuzzCheckPIDFDID(f *testing.F) {
	for _, s := range []string{"0", "12345", "18446744073709551615", "18446744073709551616", "-1", "+1", "x", ""} {
		f.Add(s)
	}
	self := os.Getpid()
	f.Fuzz(func(t *testing.T, s string) {
		err := checkPIDFDID(s, self)
		if _, perr := strconv.ParseUint(s, 10, 64); perr == nil {
			// A well-formed number is checked (or the check skipped):
			// it matches, or it names another process.
			if err != nil && !errors.Is(err, errWrongPID) {
				t.Fatalf("checkPIDFDID(%q) = %v; want nil or errWrongPID", s, err)
			}
			return
		}
		if runtime.GOOS == "linux" && (err == nil || errors.Is(err, errWrongPID) || !strings.Contains(err.Error(), envListenPIDFDID)) {
			t.Fatalf("checkPIDFDID(%q) = %v; want a format error", s, err)
		}
	})
}
