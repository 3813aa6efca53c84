//go:build linux

package e2e

// The control socket, driven through the real "hitless reload", "hitless
// status" and "hitless stop" against a real "hitless run".

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hitless/hitless/internal/harness"
)

// ctlSocket returns a control socket path in a new directory.
func ctlSocket(t *testing.T) string {
	t.Helper()
	return filepath.Join(harness.ShortDir(t), "c.sock")
}

// cli runs the hitless client with args, or the command prefix (which
// names its own hitless binary, e.g. through setpriv) if given, and fails
// the test if it runs longer than d.
func cli(t *testing.T, d time.Duration, prefix []string, args ...string) harness.CLIResult {
	t.Helper()
	if prefix == nil {
		prefix = []string{bin.hitless}
	}
	r, err := harness.RunCLI(d, append(append([]string{}, prefix...), args...)...)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// ctl runs the hitless client that polls the status (bin.client) with
// cmd against p's control socket, then args (see cli).
func ctl(t *testing.T, d time.Duration, p *harness.Hitless, cmd string, args ...string) harness.CLIResult {
	t.Helper()
	return cli(t, d, []string{bin.client}, append([]string{cmd, "--control", p.Control()}, args...)...)
}

// "hitless reload" exits 0 once the new generation serves, and says which
// one; POST load across several such reloads loses nothing.
func TestControlReload(t *testing.T) {
	sock := ctlSocket(t)
	p := start(t, harness.Options{Args: []string{"--control", sock}})
	fi, err := os.Stat(sock)
	if err != nil || fi.Mode().Perm() != 0o600 || fi.Mode()&os.ModeSocket == 0 {
		t.Fatalf("control socket: %v, mode %v; want a socket with mode 0600", err, fi.Mode())
	}
	first := getInfo(t, p.Addr())
	l := work(p.Addr(), 4, true, 0)
	defer l.Stop()
	for gen := 2; gen <= 4; gen++ {
		r := cli(t, 60*time.Second, nil, "reload", "--control", sock, "--timeout", "30s")
		if r.Code != 0 {
			t.Fatalf("reload to generation %d: %v", gen, r)
		}
		st := p.Status()
		g, _ := st.Serving()
		want := fmt.Sprintf("reload ok: generation %d (pid %d) serving", gen, g.PID)
		if g.Generation != gen || !strings.Contains(r.Stdout, want) {
			t.Errorf("after reload %d: generation %d serves, hitless reload said %q, want %q", gen, g.Generation, r.Stdout, want)
		}
		if st.ReloadsOK != gen-1 || st.PID != p.PID() {
			t.Errorf("status after reload %d: reloads_ok %d, pid %d (hitless is %d)", gen, st.ReloadsOK, st.PID, p.PID())
		}
	}
	res := l.Stop()
	t.Logf("load across 3 reloads by hitless reload: %s", res)
	if res.Failed() != 0 || res.OK() == 0 {
		t.Fatalf("want zero failed requests: %s", res)
	}
	p.WaitStatus(30*time.Second, gens(1))
	if in := getInfo(t, p.Addr()); in.PID == first.PID || in.Generation != "4" {
		t.Errorf("generation %s (pid %d) answers, want 4", in.Generation, in.PID)
	}
}

// failingChild runs the test server, unless the mode file says "hang": then
// it writes a line to stderr and never becomes ready. The mode "exit" makes
// the test server itself fail at start, with a line on stderr.
func failingChild(modeFile string) []string {
	script := `m=$(cat "$1" 2>/dev/null)
if [ "$m" = hang ]; then echo "stuck: waiting for the database" >&2; exec sleep 600; fi
exec "$2" -mode-file "$1"`
	return []string{"/bin/sh", "-c", script, "sh", modeFile, bin.server}
}

// A new child that exits or hangs fails "hitless reload" within the ready
// timeout, with the reason and its last stderr line; the old generation
// serves throughout and no request fails; the next reload works.
func TestControlReloadFails(t *testing.T) {
	for _, tc := range []struct {
		mode, reason, stderr string
	}{
		{"exit", "exited before ready: exit status 1", "testserver: mode exit: failing at start on purpose"},
		{"hang", "not ready within 1s", "stuck: waiting for the database"},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			sock := ctlSocket(t)
			modeFile := filepath.Join(t.TempDir(), "mode")
			p := start(t, harness.Options{Args: []string{"--control", sock, "--ready-timeout", "1s"}, Command: failingChild(modeFile)})
			before := getInfo(t, p.Addr())
			l := work(p.Addr(), 4, true, 0)
			defer l.Stop()

			os.WriteFile(modeFile, []byte(tc.mode), 0o644)
			r := cli(t, 30*time.Second, nil, "reload", "--control", sock, "--timeout", "30s")
			if r.Code != 1 {
				t.Fatalf("failed reload: want exit 1: %v", r)
			}
			// The ready timeout (1s) bounds the wait, with room for a
			// loaded machine and the race detector.
			if r.Took > 10*time.Second {
				t.Errorf("hitless reload took %v to report a failure, ready timeout 1s", r.Took)
			}
			for _, want := range []string{
				"reload failed: generation 2",
				tc.reason,
				tc.stderr,
				fmt.Sprintf("generation 1 (pid %d) is still serving", before.PID),
			} {
				if !strings.Contains(r.Stderr, want) {
					t.Errorf("hitless reload's stderr lacks %q:\n%s", want, r.Stderr)
				}
			}
			st := p.Status()
			if g, _ := st.Serving(); g.Generation != 1 || g.PID != before.PID {
				t.Errorf("after the failure generation %d (pid %d) serves, want 1 (pid %d)", g.Generation, g.PID, before.PID)
			}
			if st.ReloadsFailed != 1 || !strings.Contains(st.LastFailure, tc.reason) {
				t.Errorf("status: reloads_failed %d, last_failure %q", st.ReloadsFailed, st.LastFailure)
			}
			if in := getInfo(t, p.Addr()); in.PID != before.PID {
				t.Errorf("pid %d answers, want the old %d", in.PID, before.PID)
			}

			os.WriteFile(modeFile, []byte("serve"), 0o644)
			if r := cli(t, 30*time.Second, nil, "reload", "--control", sock, "--timeout", "30s"); r.Code != 0 {
				t.Fatalf("reload after the failure: %v", r)
			}
			res := l.Stop()
			t.Logf("load across the failed reload: %s", res)
			if res.Failed() != 0 || res.OK() == 0 {
				t.Fatalf("requests failed while a reload failed: %s", res)
			}
		})
	}
}

// When --timeout passes before the verdict, hitless reload says the
// verdict is unknown and exits 4; the reload goes on to its own end.
func TestControlReloadNoVerdict(t *testing.T) {
	sock := ctlSocket(t)
	modeFile := filepath.Join(t.TempDir(), "mode")
	p := start(t, harness.Options{Args: []string{"--control", sock, "--ready-timeout", "4s"}, Command: failingChild(modeFile)})
	os.WriteFile(modeFile, []byte("hang"), 0o644)
	r := cli(t, 30*time.Second, nil, "reload", "--control", sock, "--timeout", "500ms")
	if r.Code != 4 || !strings.Contains(r.Stderr, "no verdict within 500ms") || !strings.Contains(r.Stderr, "hitless status") {
		t.Fatalf("want exit 4 and a message that the verdict is unknown: %v", r)
	}
	st := p.Status()
	if len(st.Generations) != 2 || st.Generations[1].State != harness.StateStarting {
		t.Errorf("while the reload goes on, status shows %+v", st.Generations)
	}
	// The reload goes on to its end: a failure, at the ready timeout.
	st = p.WaitStatus(20*time.Second, func(s harness.Status) bool { return s.ReloadsFailed > 0 })
	if st.ReloadsFailed != 1 {
		t.Errorf("reloads_failed %d after the reload ended, want 1", st.ReloadsFailed)
	}
}

// During a drain, status shows the serving and the draining generation;
// "hitless stop" then stops everything, waits, and exits 0, and the
// control socket is gone.
func TestControlStatusDrainAndStop(t *testing.T) {
	sock := ctlSocket(t)
	modeFile := filepath.Join(t.TempDir(), "mode")
	os.WriteFile(modeFile, []byte("ignore-term"), 0o644)
	p := start(t, harness.Options{Args: []string{"--control", sock, "--drain-timeout", "60s"}}, "-mode-file", modeFile)
	old := getInfo(t, p.Addr())
	os.WriteFile(modeFile, []byte("serve"), 0o644)
	if r := cli(t, 30*time.Second, nil, "reload", "--control", sock); r.Code != 0 {
		t.Fatalf("reload: %v", r)
	}
	st := p.Status()
	states := map[int]string{}
	for _, g := range st.Generations {
		states[g.PID] = g.State
		if g.State == "draining" && g.DrainAt.IsZero() {
			t.Errorf("draining generation without drain_at: %+v", g)
		}
		// Both generations are Go servers: each holds megabytes.
		if g.RSS < 1<<20 {
			t.Errorf("generation %d: rss_bytes %d, want its process group's resident memory", g.Generation, g.RSS)
		}
	}
	g, _ := st.Serving()
	newPID := g.PID
	if len(st.Generations) != 2 || states[old.PID] != "draining" || newPID == 0 || newPID == old.PID {
		t.Fatalf("status during the drain: %+v; want generation 1 (pid %d) draining and generation 2 serving", st.Generations, old.PID)
	}
	if st.Generations[0].Status != "ignoring SIGTERM" {
		t.Errorf("generation 1's STATUS= is %q, want the child's own %q", st.Generations[0].Status, "ignoring SIGTERM")
	}
	text := cli(t, 20*time.Second, nil, "status", "--control", sock)
	for _, want := range []string{
		fmt.Sprintf("hitless pid %d", p.PID()),
		"GENERATION", "RSS", "MiB", "draining", "serving", strconv.Itoa(old.PID), strconv.Itoa(newPID),
		"reloads: 1 ok, 0 failed",
	} {
		if text.Code != 0 || !strings.Contains(text.Stdout, want) {
			t.Errorf("hitless status lacks %q: %v", want, text)
		}
	}
	t.Logf("hitless status:\n%s", text.Stdout)

	// The old child ignores SIGTERM and would hold the stop for the whole
	// drain timeout; end it, then stop.
	syscall.Kill(old.PID, syscall.SIGKILL)
	r := cli(t, 60*time.Second, nil, "stop", "--control", sock, "--timeout", "30s")
	if r.Code != 0 {
		t.Fatalf("hitless stop: %v", r)
	}
	if harness.Alive(newPID) {
		t.Errorf("hitless stop returned while the serving child %d is alive", newPID)
	}
	if code := p.Wait(10 * time.Second); code != 0 {
		t.Errorf("hitless exited %d after hitless stop", code)
	}
	if _, err := os.Lstat(sock); err == nil {
		t.Errorf("control socket %s left behind", sock)
	}
	if r := cli(t, 10*time.Second, nil, "status", "--control", sock); r.Code != 3 {
		t.Errorf("status with hitless gone: want exit 3: %v", r)
	}
}

// Without --control, hitless run takes NAME.sock in the default directory,
// NAME being --name or the command's base name, and the clients find it
// by --name, or as the only socket there. A second hitless with the same
// name is refused before any child starts.
func TestControlDefaultPath(t *testing.T) {
	dir := filepath.Join(os.Getenv("XDG_RUNTIME_DIR"), "hitless")
	p := start(t, harness.Options{Args: []string{"--name", "orders"}})
	sock := filepath.Join(dir, "orders.sock")
	// Where hitless put its socket is in its log alone.
	if got := p.Control(); got != sock {
		t.Errorf("control socket at %q, want %q", got, sock)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("directory %s: %v, mode %v; want 0700", dir, err, fi.Mode())
	}
	for _, args := range [][]string{{"status", "--name", "orders"}, {"status"}} {
		if r := cli(t, 20*time.Second, nil, args...); r.Code != 0 || !strings.Contains(r.Stdout, "serving") {
			t.Errorf("hitless %s: %v", strings.Join(args, " "), r)
		}
	}
	marker := filepath.Join(t.TempDir(), "started")
	q := startRaw(t, nil, "run", "--name", "orders", "--listen", "tcp://127.0.0.1:0", "--", "/bin/sh", "-c", "touch "+marker)
	if code := q.Wait(10 * time.Second); code != 2 || !strings.Contains(q.Output(), "already in use by pid "+strconv.Itoa(p.PID())) {
		t.Errorf("second hitless with the same name: exit %d, %s", code, q.Output())
	}
	if _, err := os.Stat(marker); err == nil {
		t.Error("the second hitless started a child")
	}
	// The command's base name is the default name.
	r := start(t, harness.Options{DefaultControl: true})
	if got := r.Control(); got != filepath.Join(dir, "testserver.sock") {
		t.Errorf("default control socket %q, want testserver.sock in %s", got, dir)
	}
	if res := cli(t, 20*time.Second, nil, "status"); res.Code != 2 || !strings.Contains(res.Stderr, "orders.sock, testserver.sock") {
		t.Errorf("status with two sockets and no --name: want exit 2 naming both: %v", res)
	}
	if res := cli(t, 20*time.Second, nil, "reload", "--name", "testserver"); res.Code != 0 {
		t.Errorf("reload --name testserver: %v", res)
	}
	if g, _ := r.Status().Serving(); g.Generation != 2 {
		t.Errorf("generation %d serves after reload --name testserver", g.Generation)
	}
	if g, _ := p.Status().Serving(); g.Generation != 1 {
		t.Errorf("the other service reloaded too: generation %d serves", g.Generation)
	}
}

// Garbage on the control socket gets an error reply naming the problem and
// changes nothing; a client that sends nothing holds up no one else.
func TestControlGarbage(t *testing.T) {
	sock := ctlSocket(t)
	p := start(t, harness.Options{Args: []string{"--control", sock}})
	before := getInfo(t, p.Addr())
	m := p.Mark()

	// A client that connects and says nothing, held open throughout.
	idle, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()

	noise := make([]byte, 2000)
	rand.Read(noise)
	noise = bytes.ReplaceAll(noise, []byte("\n"), nil)
	for _, tc := range []struct {
		name, send string
		halfClose  bool
		want       string // in the error; "" for any
	}{
		{"random bytes", string(noise[:300]) + "\n", false, ""},
		{"random bytes, no newline", string(noise[:300]), true, ""},
		{"oversize line", strings.Repeat("a", 5000) + "\n", false, "longer than 4096 bytes"},
		{"oversize, no newline", `{"cmd":"reload","timeout":"` + strings.Repeat("9", 9000), false, "longer than 4096 bytes"},
		{"bad JSON", `{"cmd":` + "\n", false, "malformed JSON"},
		{"not an object", `["reload"]` + "\n", false, "not a JSON object"},
		{"null", "null\n", false, "not a JSON object"},
		{"unknown command", `{"cmd":"restart"}` + "\n", false, `unknown cmd "restart": valid commands are "reload", "status", "stop", "promote", "rollback" and "upgrade"`},
		{"empty command", `{"cmd":""}` + "\n", false, `empty "cmd"`},
		{"no command", `{"timeout":"1s"}` + "\n", false, `missing field "cmd"`},
		{"extra field", `{"cmd":"reload","force":true}` + "\n", false, `unknown field "force": valid fields are "cmd", "timeout" and "binary"`},
		{"wrong type", `{"cmd":["reload"]}` + "\n", false, `field "cmd" is an array: want a string`},
		{"bad timeout", `{"cmd":"reload","timeout":"soon"}` + "\n", false, `"timeout" "soon" is not a duration`},
		{"negative timeout", `{"cmd":"stop","timeout":"-5s"}` + "\n", false, "positive duration"},
		{"numeric timeout", `{"cmd":"stop","timeout":30}` + "\n", false, `field "timeout" is a number: want a string`},
		{"key twice", `{"cmd":"status","cmd":"reload"}` + "\n", false, `field "cmd" given twice`},
		{"two requests", `{"cmd":"reload"}{"cmd":"stop"}` + "\n", false, "data after the JSON object"},
		{"half a line, half-closed", `{"cmd":"rel`, true, "malformed JSON"},
		{"NUL bytes", "\x00\x00\x00\n", false, ""},
		{"empty line", "\n", false, "empty request"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.Dial("unix", sock)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(20 * time.Second))
			c.Write([]byte(tc.send)) // the server may reply before reading it all
			if tc.halfClose {
				c.(*net.UnixConn).CloseWrite()
			}
			b, err := io.ReadAll(c)
			var rep struct {
				OK    bool   `json:"ok"`
				Code  string `json:"code"`
				Error string `json:"error"`
			}
			if jerr := json.Unmarshal(b, &rep); jerr != nil {
				t.Fatalf("reply %q (read error %v): %v", b, err, jerr)
			}
			if rep.OK || rep.Code != "bad_request" || !strings.Contains(rep.Error, tc.want) {
				t.Errorf("reply %+v, want a bad_request error containing %q", rep, tc.want)
			}
		})
	}
	// Half a line and gone, and nothing at all: no one to answer.
	for _, send := range []string{`{"cmd":"reload"`, ""} {
		c, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte(send))
		c.Close()
	}
	// The idle client is answered once the read timeout passes.
	idle.SetDeadline(time.Now().Add(20 * time.Second))
	b, _ := io.ReadAll(idle)
	if !bytes.Contains(b, []byte(`"code":"bad_request"`)) || !bytes.Contains(b, []byte("no complete request line within 5s")) {
		t.Errorf("idle client got %q", b)
	}

	st := p.Status()
	if g, ok := st.Serving(); !ok || g.Generation != 1 || g.PID != before.PID || len(st.Generations) != 1 || st.ReloadsOK+st.ReloadsFailed != 0 || st.Stopping {
		t.Errorf("after the garbage: %+v", st)
	}
	if in := getInfo(t, p.Addr()); in.PID != before.PID {
		t.Errorf("pid %d answers, want %d", in.PID, before.PID)
	}
	// That nothing else happened meanwhile is in the log alone.
	for _, r := range p.Records(m) {
		switch r.Msg() {
		case "started", "SIGHUP: reload", "stop", "control request":
			if r.Msg() == "control request" && r.Str("cmd") == "status" {
				continue
			}
			t.Errorf("garbage on the control socket caused %v", r)
		}
	}
}

// Another user can neither reach the socket (mode 0600) nor, when the file
// mode lets them connect, get past the peer-credentials check; nothing
// reloads. Runs the client as nobody with setpriv; needs root.
func TestControlSecondUser(t *testing.T) {
	requireRoot(t) // to run the client as nobody
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Skip("needs setpriv (util-linux), to run the client as nobody")
	}
	// nobody must be able to run the binary and reach the socket file.
	pub := worldReadableDir(t)
	client := filepath.Join(pub, "hitless")
	copyFile(t, bin.hitless, client, 0o755)
	sock := filepath.Join(pub, "c.sock")

	p := start(t, harness.Options{Args: []string{"--control", sock}})
	before := getInfo(t, p.Addr())
	m := p.Mark()
	asNobody := []string{setpriv, "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--", client}

	for _, cmd := range []string{"reload", "stop", "status"} {
		r := cli(t, 20*time.Second, asNobody, cmd, "--control", sock, "--timeout", "5s")
		if r.Code != 3 || !strings.Contains(r.Stderr, "permission denied") {
			t.Errorf("%s as nobody through a 0600 socket: want exit 3 and permission denied: %v", cmd, r)
		}
	}
	// Open the file to everyone: the server itself must refuse.
	if err := os.Chmod(sock, 0o666); err != nil {
		t.Fatal(err)
	}
	for _, cmd := range []string{"reload", "stop", "status"} {
		r := cli(t, 20*time.Second, asNobody, cmd, "--control", sock, "--timeout", "5s")
		if r.Code != 3 || !strings.Contains(r.Stderr, "not authorized: uid 65534") {
			t.Errorf("%s as nobody through a 0666 socket: want exit 3 and not authorized: %v", cmd, r)
		}
	}
	// Who was refused is in the log alone.
	_, rec := p.WaitSince(m, 10*time.Second, harness.Is("control socket: connection refused"))
	if rec.Int("peer_uid") != 65534 {
		t.Errorf("refusal logged for uid %d, want 65534", rec.Int("peer_uid"))
	}
	st := p.Status()
	if g, ok := st.Serving(); !ok || g.Generation != 1 || g.PID != before.PID || st.ReloadsOK+st.ReloadsFailed != 0 || st.Stopping {
		t.Errorf("after nobody's attempts: %+v", st)
	}
	for _, r := range p.Records(m) {
		if r.Msg() == "started" || r.Msg() == "control request" && r.Str("cmd") != "status" {
			t.Errorf("nobody caused %v", r)
		}
	}
	// Root still may.
	if r := cli(t, 30*time.Second, nil, "reload", "--control", sock); r.Code != 0 {
		t.Errorf("reload as root: %v", r)
	}
}
