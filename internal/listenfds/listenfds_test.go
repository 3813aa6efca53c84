package listenfds

import (
	"errors"
	"math"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
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
		got, err := ParseCount(EnvFDs, tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseCount(%q) = %d, %v; want %d, ok=%v", tc.in, got, err, tc.want, tc.ok)
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
		if got := strings.Contains(err.Error(), ErrWrongPID.Error()); got != tc.wrongPID {
			t.Errorf("parseListenPID(%q): %v; ErrWrongPID=%v, want %v", tc.in, err, got, tc.wrongPID)
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
		n, err := ParseCount(EnvFDs, s)
		v, perr := strconv.ParseUint(s, 10, 64)
		want := isDecimal(s) && perr == nil && v <= MaxFDs
		if (err == nil) != want {
			t.Fatalf("ParseCount(%q) = %d, %v; want accepted=%v", s, n, err, want)
		}
		if err != nil {
			if n != 0 || !strings.Contains(err.Error(), EnvFDs) {
				t.Fatalf("ParseCount(%q) = %d, %v: want 0 and an error naming %s", s, n, err, EnvFDs)
			}
			return
		}
		if uint64(n) != v {
			t.Fatalf("ParseCount(%q) = %d, want %d", s, n, v)
		}
		if again, err := ParseCount(EnvFDs, strconv.Itoa(n)); err != nil || again != n {
			t.Fatalf("ParseCount(%q) = %d, but %q parses to %d, %v", s, n, strconv.Itoa(n), again, err)
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
		if err := parseListenPID(s, false, self); !errors.Is(err, ErrWrongPID) {
			t.Fatalf("parseListenPID unset = %v, want ErrWrongPID", err)
		}
		err := parseListenPID(s, true, self)
		v, perr := strconv.ParseUint(s, 10, 64)
		isPID := isDecimal(s) && perr == nil && v > 0 && v <= math.MaxInt
		switch {
		case !isPID:
			// A malformed variable is an error to report, not a sign
			// that the descriptors were meant for another process.
			if err == nil || errors.Is(err, ErrWrongPID) || !strings.Contains(err.Error(), EnvPID) {
				t.Fatalf("parseListenPID(%q, self %d) = %v; want a format error", s, self, err)
			}
		case v == uint64(self):
			if err != nil {
				t.Fatalf("parseListenPID(%q, self %d) = %v; want it accepted", s, self, err)
			}
		default:
			if !errors.Is(err, ErrWrongPID) {
				t.Fatalf("parseListenPID(%q, self %d) = %v; want ErrWrongPID", s, self, err)
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
			if err != nil && !errors.Is(err, ErrWrongPID) {
				t.Fatalf("checkPIDFDID(%q) = %v; want nil or ErrWrongPID", s, err)
			}
			return
		}
		if runtime.GOOS == "linux" && (err == nil || errors.Is(err, ErrWrongPID) || !strings.Contains(err.Error(), EnvPIDFDID)) {
			t.Fatalf("checkPIDFDID(%q) = %v; want a format error", s, err)
		}
	})
}

func TestRead(t *testing.T) {
	self := os.Getpid()
	env := func(kv ...string) func(string) (string, bool) {
		m := map[string]string{}
		for _, s := range kv {
			k, v, _ := strings.Cut(s, "=")
			m[k] = v
		}
		return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
	}
	pid := "LISTEN_PID=" + strconv.Itoa(self)
	for _, tc := range []struct {
		env      []string
		names    string
		set      bool
		wrongPID bool
		err      string
	}{
		{env: nil},
		{env: []string{"LISTEN_FDS=2", pid, "LISTEN_FDNAMES=web:admin"}, names: "web:admin", set: true},
		{env: []string{"LISTEN_FDS=2", pid}, names: "unknown:unknown", set: true},
		{env: []string{"LISTEN_FDS=0", pid}, set: true},
		// An empty variable counts as unset.
		{env: []string{"LISTEN_FDS=", pid}},
		{env: []string{"LISTEN_FDS=1", pid, "LISTEN_PIDFDID=", "LISTEN_FDNAMES="}, names: "unknown", set: true},
		{env: []string{"LISTEN_FDS=2", "LISTEN_PID=", "LISTEN_FDNAMES=web:admin"}, set: true, wrongPID: true, err: "LISTEN_FDS=2 ignored: "},
		{env: []string{"LISTEN_FDS=2", "LISTEN_FDNAMES=web:admin"}, set: true, wrongPID: true},
		{env: []string{"LISTEN_FDS=2", "LISTEN_PID=1", "LISTEN_FDNAMES=web:admin"}, set: true, wrongPID: true},
		// The count is checked first: a corrupt one is an error, whoever
		// the descriptors are for.
		{env: []string{"LISTEN_FDS=x", "LISTEN_PID=1"}, set: true, err: "LISTEN_FDS"},
		{env: []string{"LISTEN_FDS=1", "LISTEN_PID=x"}, set: true, err: "LISTEN_PID"},
		{env: []string{"LISTEN_FDS=1", pid, "LISTEN_FDNAMES=a:b"}, set: true, err: "LISTEN_FDNAMES"},
		{env: []string{"LISTEN_FDS=1", pid, "LISTEN_PIDFDID=x"}, set: true, err: "LISTEN_PIDFDID"},
	} {
		names, set, err := Read(env(tc.env...), self)
		if set != tc.set || errors.Is(err, ErrWrongPID) != tc.wrongPID ||
			tc.err == "" && err != nil && !tc.wrongPID || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("Read(%q) = %q, %v, %v; want set %v, wrong pid %v, error naming %q", tc.env, names, set, err, tc.set, tc.wrongPID, tc.err)
			continue
		}
		if err == nil && strings.Join(names, ":") != tc.names {
			t.Errorf("Read(%q) names %q, want %q", tc.env, names, tc.names)
		}
	}
}

func TestCheckName(t *testing.T) {
	for name, ok := range map[string]bool{
		"web": true, "hitless.socket": true, "a b=c": true, "stored": true, strings.Repeat("x", 255): true,
		"": false, "a:b": false, "tab\t": false, "é": false, strings.Repeat("x", 256): false,
	} {
		if err := CheckName(name); (err == nil) != ok {
			t.Errorf("CheckName(%q) = %v, want ok %v", name, err, ok)
		}
	}
}
