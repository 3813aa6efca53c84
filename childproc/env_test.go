package childproc

import (
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

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
