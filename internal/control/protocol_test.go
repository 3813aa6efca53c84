//go:build linux

package control

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestParseRequest(t *testing.T) {
	for _, tc := range []struct {
		in      string
		cmd     string
		timeout time.Duration
		err     string
	}{
		{`{"cmd":"reload"}`, "reload", 0, ""},
		{`{"cmd":"reload","timeout":"90s"}`, "reload", 90 * time.Second, ""},
		{` { "timeout" : "1m30s" , "cmd" : "stop" } `, "stop", 90 * time.Second, ""},
		{`{"cmd":"status"}` + "\r", "status", 0, ""}, // JSON whitespace
		{`{"cmd":"status"}`, "status", 0, ""},
		{``, "", 0, "empty request"},
		{`   `, "", 0, "empty request"},
		{`{`, "", 0, "malformed JSON: unexpected end of line"},
		{`{"cmd":"reload"`, "", 0, "malformed JSON"},
		{`{"cmd":"reload",}`, "", 0, "malformed JSON"},
		{`reload`, "", 0, "malformed JSON"},
		{`"reload"`, "", 0, "request is a string, not a JSON object"},
		{`42`, "", 0, "request is a number"},
		{`[]`, "", 0, "request is an array"},
		{`null`, "", 0, "request is null"},
		{`{}`, "", 0, `missing field "cmd"`},
		{`{"cmd":""}`, "", 0, `empty "cmd"`},
		{`{"cmd":"promote"}`, "promote", 0, ""},
		{`{"cmd":"rollback","timeout":"5s"}`, "rollback", 5 * time.Second, ""},
		{`{"cmd":"RELOAD"}`, "", 0, `unknown cmd "RELOAD": valid commands are "reload", "status", "stop", "promote", "rollback" and "upgrade"`},
		{`{"cmd":null}`, "", 0, `field "cmd" is null: want a string`},
		{`{"cmd":true}`, "", 0, `field "cmd" is a boolean`},
		{`{"cmd":{"x":1}}`, "", 0, `field "cmd" is an object`},
		{`{"Cmd":"reload"}`, "", 0, `unknown field "Cmd"`},
		{`{"cmd":"reload","x":1}`, "", 0, `unknown field "x": valid fields are "cmd", "timeout" and "binary"`},
		{`{"cmd":"reload","cmd":"stop"}`, "", 0, `field "cmd" given twice`},
		{`{"cmd":"reload"} {}`, "", 0, "data after the JSON object"},
		{`{"cmd":"reload"}x`, "", 0, "data after the JSON object"},
		{`{"cmd":"reload","timeout":"0s"}`, "", 0, "positive duration"},
		{`{"cmd":"reload","timeout":"-1s"}`, "", 0, "positive duration"},
		{`{"cmd":"reload","timeout":"25h"}`, "", 0, "at most 24h0m0s"},
		{`{"cmd":"reload","timeout":"90"}`, "", 0, `"timeout" "90" is not a duration`},
		{`{"cmd":"reload","timeout":90}`, "", 0, `field "timeout" is a number`},
		{"{\"cmd\":\"re\xffload\"}", "", 0, "not valid UTF-8"},
		{`{"cmd":"` + strings.Repeat("x", 200) + `"}`, "", 0, `…: valid commands`},
	} {
		req, err := parseRequest([]byte(tc.in))
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("%q: %v", tc.in, err)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%q: error %v, want one containing %q", tc.in, err, tc.err)
		case tc.err == "" && (req.cmd != tc.cmd || req.timeout != tc.timeout):
			t.Errorf("%q: got %+v, want cmd %q timeout %v", tc.in, req, tc.cmd, tc.timeout)
		}
	}
}

// Whatever the bytes, parseRequest does not panic, accepts only a known
// command and a sane timeout, and an error message stays short and valid.
func FuzzParseRequest(f *testing.F) {
	for _, s := range []string{`{"cmd":"reload","timeout":"90s"}`, `{"cmd":"status"}`, `{"cmd":"stop"}`, `{`, `[1,2]`, `{"cmd":"x","cmd":"y"}`, "\x00", `{"timeout":"1h","cmd":"reload"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		req, err := parseRequest(b)
		if err != nil {
			if len(err.Error()) > 400 || !utf8.ValidString(err.Error()) {
				t.Fatalf("error message of %d bytes, valid UTF-8 %v: %q", len(err.Error()), utf8.ValidString(err.Error()), err)
			}
			return
		}
		switch req.cmd {
		case CmdReload, CmdStatus, CmdStop:
		default:
			t.Fatalf("accepted cmd %q", req.cmd)
		}
		if req.timeout < 0 || req.timeout > MaxTimeout {
			t.Fatalf("accepted timeout %v", req.timeout)
		}
	})
}

func TestNameFromCommand(t *testing.T) {
	for in, want := range map[string]string{
		"/srv/app/current/bin/orders-api": "orders-api",
		"./server":                        "server",
		"python3.12":                      "python3.12",
		"/bin/my server":                  "my_server",
		".hidden":                         "hidden",
		"/":                               "hitless",
		"":                                "hitless",
		"héllo":                           "h__llo",
		strings.Repeat("a", 100):          strings.Repeat("a", 64),
	} {
		got := NameFromCommand(in)
		if got != want {
			t.Errorf("NameFromCommand(%q) = %q, want %q", in, got, want)
		}
		if err := CheckName(got); err != nil {
			t.Errorf("NameFromCommand(%q) = %q, which CheckName refuses: %v", in, got, err)
		}
	}
	for _, good := range []string{"app@1", "9.x_y-z", strings.Repeat("a", 64)} {
		if err := CheckName(good); err != nil {
			t.Errorf("CheckName(%q): %v", good, err)
		}
	}
	for _, bad := range []string{"", "../x", "a/b", "-x", strings.Repeat("a", 65), "a b", "a\n", "é", "a:b"} {
		if CheckName(bad) == nil {
			t.Errorf("CheckName(%q) accepted it", bad)
		}
	}
}

func TestDefaultPath(t *testing.T) {
	t.Setenv(EnvControl, "")
	t.Setenv("XDG_RUNTIME_DIR", "/run/user/1000")
	if got := DefaultPath("app"); got != "/run/user/1000/hitless/app.sock" {
		t.Errorf("with XDG_RUNTIME_DIR: %q", got)
	}
	t.Setenv("XDG_RUNTIME_DIR", "relative/dir") // not absolute: ignored
	want := "/run/hitless/app.sock"
	if os.Geteuid() != 0 {
		t.Setenv("TMPDIR", "/var/tmp")
		want = "/var/tmp/hitless-" + strconv.Itoa(os.Geteuid()) + "/app.sock"
	}
	if got := DefaultPath("app"); got != want {
		t.Errorf("without XDG_RUNTIME_DIR: %q, want %q", got, want)
	}
	t.Setenv(EnvControl, "/x/c.sock")
	if got := DefaultPath("app"); got != "/x/c.sock" {
		t.Errorf("with %s: %q", EnvControl, got)
	}
}

func TestResolve(t *testing.T) {
	xdg := shortDir(t)
	t.Setenv("XDG_RUNTIME_DIR", xdg)
	t.Setenv(EnvControl, "")
	dir := filepath.Join(xdg, "hitless")

	if p, _ := Resolve("/given.sock", "app"); p != "/given.sock" {
		t.Errorf("--control: %q", p)
	}
	if p, _ := Resolve("", "app"); p != filepath.Join(dir, "app.sock") {
		t.Errorf("--name: %q", p)
	}
	if _, err := Resolve("", "../etc"); err == nil {
		t.Error("--name ../etc accepted")
	}
	_, err := Resolve("", "")
	if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "no hitless control socket in "+dir) || strings.Contains(err.Error(), "file does not exist") {
		t.Errorf("no socket: %v", err)
	}
	a, err := Listen(filepath.Join(dir, "a.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if p, err := Resolve("", ""); err != nil || p != a.Path() {
		t.Errorf("one socket: %q, %v", p, err)
	}
	// A stale socket does not count.
	stale, _ := net.Listen("unix", filepath.Join(dir, "b.sock"))
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	stale.Close()
	if p, err := Resolve("", ""); err != nil || p != a.Path() {
		t.Errorf("one live and one stale socket: %q, %v", p, err)
	}
	b, err := Listen(filepath.Join(dir, "b.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, err := Resolve("", ""); !errors.Is(err, ErrAmbiguous) || !strings.Contains(err.Error(), "(a.sock, b.sock)") {
		t.Errorf("two sockets: %v", err)
	}
	t.Setenv(EnvControl, "/env.sock")
	if p, _ := Resolve("", ""); p != "/env.sock" {
		t.Errorf("%s: %q", EnvControl, p)
	}
}
