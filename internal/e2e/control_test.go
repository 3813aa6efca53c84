package e2e

// The control socket, driven through the real "hitless reload", "hitless
// status" and "hitless stop" against a real "hitless run".

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
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
)

// ctlSocket returns a control socket path in a short new directory: a
// unix socket path is limited to 107 bytes, which t.TempDir() can exceed.
func ctlSocket(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "hl")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return filepath.Join(dir, "c.sock")
}

// cliResult is the outcome of one run of the hitless client.
type cliResult struct {
	code           int
	stdout, stderr string
	took           time.Duration
}

func (r cliResult) String() string {
	return fmt.Sprintf("exit %d after %v\nstdout: %s\nstderr: %s", r.code, r.took.Round(time.Millisecond), r.stdout, r.stderr)
}

// cli runs the hitless client with args, or the command prefix (which
// names its own hitless binary, e.g. through setpriv) if given, and fails
// the test if it runs longer than d.
func cli(t *testing.T, d time.Duration, prefix []string, args ...string) cliResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	if prefix == nil {
		prefix = []string{bin.hitless}
	}
	argv := append(append([]string{}, prefix...), args...)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	r := cliResult{stdout: stdout.String(), stderr: stderr.String(), took: time.Since(start)}
	if ctx.Err() != nil {
		t.Fatalf("hitless %s: still running after %v", strings.Join(args, " "), d)
	}
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit):
		r.code = exit.ExitCode()
	default:
		t.Fatalf("hitless %s: %v", strings.Join(args, " "), err)
	}
	return r
}

// ctlStatus is what "hitless status --json" prints.
type ctlStatus struct {
	PID         int `json:"pid"`
	Generations []struct {
		Generation int       `json:"generation"`
		PID        int       `json:"pid"`
		State      string    `json:"state"`
		Started    time.Time `json:"started"`
		DrainAt    time.Time `json:"drain_at"`
		Status     string    `json:"status"`
		RSS        int64     `json:"rss_bytes"`
	} `json:"generations"`
	Stopping      bool   `json:"stopping"`
	ReloadsOK     int    `json:"reloads_ok"`
	ReloadsFailed int    `json:"reloads_failed"`
	LastFailure   string `json:"last_failure"`
}

func (s ctlStatus) serving() (gen, pid int) {
	for _, g := range s.Generations {
		if g.State == "serving" {
			return g.Generation, g.PID
		}
	}
	return 0, 0
}

func status(t *testing.T, sock string) ctlStatus {
	t.Helper()
	r := cli(t, 20*time.Second, nil, "status", "--json", "--control", sock)
	if r.code != 0 {
		t.Fatalf("hitless status: %v", r)
	}
	var st ctlStatus
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
		t.Fatalf("hitless status --json: %v\n%s", err, r.stdout)
	}
	return st
}

// "hitless reload" exits 0 once the new generation serves, and says which
// one; POST load across several such reloads loses nothing.
func TestControlReload(t *testing.T) {
	sock := ctlSocket(t)
	p := startHitless(t, opts{args: []string{"--control", sock}})
	fi, err := os.Stat(sock)
	if err != nil || fi.Mode().Perm() != 0o600 || fi.Mode()&os.ModeSocket == 0 {
		t.Fatalf("control socket: %v, mode %v; want a socket with mode 0600", err, fi.Mode())
	}
	first := getInfo(t, p.addr)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	done := make(chan *loadResult)
	go func() { done <- load(ctx, p.addr, 4, true, 0, 1_000_000) }()
	for gen := 2; gen <= 4; gen++ {
		r := cli(t, 60*time.Second, nil, "reload", "--control", sock, "--timeout", "30s")
		if r.code != 0 {
			t.Fatalf("reload to generation %d: %v", gen, r)
		}
		st := status(t, sock)
		sgen, spid := st.serving()
		want := fmt.Sprintf("reload ok: generation %d (pid %d) serving", gen, spid)
		if sgen != gen || !strings.Contains(r.stdout, want) {
			t.Errorf("after reload %d: generation %d serves, hitless reload said %q, want %q", gen, sgen, r.stdout, want)
		}
		if st.ReloadsOK != gen-1 || st.PID != p.cmd.Process.Pid {
			t.Errorf("status after reload %d: reloads_ok %d, pid %d (hitless is %d)", gen, st.ReloadsOK, st.PID, p.cmd.Process.Pid)
		}
	}
	cancel()
	res := <-done
	t.Logf("load across 3 reloads by hitless reload: %s", res)
	if res.failed.Load() != 0 || res.ok.Load() == 0 {
		t.Fatalf("want zero failed requests: %s", res)
	}
	p.waitFor(30*time.Second, func(r record) bool { return r.msg() == "drained" && r.int("generation") == 3 })
	if in := getInfo(t, p.addr); in.PID == first.PID || in.Generation != "4" {
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
			p := startHitless(t, opts{args: []string{"--control", sock, "--ready-timeout", "1s"}, cmd: failingChild(modeFile)})
			before := getInfo(t, p.addr)
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			done := make(chan *loadResult)
			go func() { done <- load(ctx, p.addr, 4, true, 0, 1_000_000) }()

			os.WriteFile(modeFile, []byte(tc.mode), 0o644)
			r := cli(t, 30*time.Second, nil, "reload", "--control", sock, "--timeout", "30s")
			if r.code != 1 {
				t.Fatalf("failed reload: want exit 1: %v", r)
			}
			// The ready timeout (1s) bounds the wait, with room for a
			// loaded machine and the race detector.
			if r.took > 10*time.Second {
				t.Errorf("hitless reload took %v to report a failure, ready timeout 1s", r.took)
			}
			for _, want := range []string{
				"reload failed: generation 2",
				tc.reason,
				tc.stderr,
				fmt.Sprintf("generation 1 (pid %d) is still serving", before.PID),
			} {
				if !strings.Contains(r.stderr, want) {
					t.Errorf("hitless reload's stderr lacks %q:\n%s", want, r.stderr)
				}
			}
			st := status(t, sock)
			if gen, pid := st.serving(); gen != 1 || pid != before.PID {
				t.Errorf("after the failure generation %d (pid %d) serves, want 1 (pid %d)", gen, pid, before.PID)
			}
			if st.ReloadsFailed != 1 || !strings.Contains(st.LastFailure, tc.reason) {
				t.Errorf("status: reloads_failed %d, last_failure %q", st.ReloadsFailed, st.LastFailure)
			}
			if in := getInfo(t, p.addr); in.PID != before.PID {
				t.Errorf("pid %d answers, want the old %d", in.PID, before.PID)
			}

			os.WriteFile(modeFile, []byte("serve"), 0o644)
			if r := cli(t, 30*time.Second, nil, "reload", "--control", sock, "--timeout", "30s"); r.code != 0 {
				t.Fatalf("reload after the failure: %v", r)
			}
			cancel()
			res := <-done
			t.Logf("load across the failed reload: %s", res)
			if res.failed.Load() != 0 || res.ok.Load() == 0 {
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
	p := startHitless(t, opts{args: []string{"--control", sock, "--ready-timeout", "4s"}, cmd: failingChild(modeFile)})
	os.WriteFile(modeFile, []byte("hang"), 0o644)
	m := p.mark()
	r := cli(t, 30*time.Second, nil, "reload", "--control", sock, "--timeout", "500ms")
	if r.code != 4 || !strings.Contains(r.stderr, "no verdict within 500ms") || !strings.Contains(r.stderr, "hitless status") {
		t.Fatalf("want exit 4 and a message that the verdict is unknown: %v", r)
	}
	st := status(t, sock)
	if len(st.Generations) != 2 || st.Generations[1].State != "starting" {
		t.Errorf("while the reload goes on, status shows %+v", st.Generations)
	}
	p.waitSince(m, 20*time.Second, msgIs("reload failed"))
	if st := status(t, sock); st.ReloadsFailed != 1 {
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
	p := startHitless(t, opts{args: []string{"--control", sock, "--drain-timeout", "60s"}, srv: []string{"-mode-file", modeFile}})
	old := getInfo(t, p.addr)
	os.WriteFile(modeFile, []byte("serve"), 0o644)
	if r := cli(t, 30*time.Second, nil, "reload", "--control", sock); r.code != 0 {
		t.Fatalf("reload: %v", r)
	}
	st := status(t, sock)
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
	_, newPID := st.serving()
	if len(st.Generations) != 2 || states[old.PID] != "draining" || newPID == 0 || newPID == old.PID {
		t.Fatalf("status during the drain: %+v; want generation 1 (pid %d) draining and generation 2 serving", st.Generations, old.PID)
	}
	if st.Generations[0].Status != "ignoring SIGTERM" {
		t.Errorf("generation 1's STATUS= is %q, want the child's own %q", st.Generations[0].Status, "ignoring SIGTERM")
	}
	text := cli(t, 20*time.Second, nil, "status", "--control", sock)
	for _, want := range []string{
		fmt.Sprintf("hitless pid %d", p.cmd.Process.Pid),
		"GENERATION", "RSS", "MiB", "draining", "serving", strconv.Itoa(old.PID), strconv.Itoa(newPID),
		"reloads: 1 ok, 0 failed",
	} {
		if text.code != 0 || !strings.Contains(text.stdout, want) {
			t.Errorf("hitless status lacks %q: %v", want, text)
		}
	}
	t.Logf("hitless status:\n%s", text.stdout)

	// The old child ignores SIGTERM and would hold the stop for the whole
	// drain timeout; end it, then stop.
	syscall.Kill(old.PID, syscall.SIGKILL)
	r := cli(t, 60*time.Second, nil, "stop", "--control", sock, "--timeout", "30s")
	if r.code != 0 {
		t.Fatalf("hitless stop: %v", r)
	}
	if alive(newPID) {
		t.Errorf("hitless stop returned while the serving child %d is alive", newPID)
	}
	if code := p.wait(10 * time.Second); code != 0 {
		t.Errorf("hitless exited %d after hitless stop", code)
	}
	if _, err := os.Lstat(sock); err == nil {
		t.Errorf("control socket %s left behind", sock)
	}
	if r := cli(t, 10*time.Second, nil, "status", "--control", sock); r.code != 3 {
		t.Errorf("status with hitless gone: want exit 3: %v", r)
	}
}

// Without --control, hitless run takes NAME.sock in the default directory,
// NAME being --name or the command's base name, and the clients find it
// by --name, or as the only socket there. A second hitless with the same
// name is refused before any child starts.
func TestControlDefaultPath(t *testing.T) {
	dir := filepath.Join(os.Getenv("XDG_RUNTIME_DIR"), "hitless")
	p := startHitless(t, opts{args: []string{"--name", "orders"}})
	sock := filepath.Join(dir, "orders.sock")
	if rec := p.waitFor(time.Second, msgIs("control socket")); rec.str("path") != sock {
		t.Errorf("control socket at %q, want %q", rec.str("path"), sock)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("directory %s: %v, mode %v; want 0700", dir, err, fi.Mode())
	}
	for _, args := range [][]string{{"status", "--name", "orders"}, {"status"}} {
		if r := cli(t, 20*time.Second, nil, args...); r.code != 0 || !strings.Contains(r.stdout, "serving") {
			t.Errorf("hitless %s: %v", strings.Join(args, " "), r)
		}
	}
	marker := filepath.Join(t.TempDir(), "started")
	q := startRaw(t, nil, "run", "--name", "orders", "--listen", "tcp://127.0.0.1:0", "--", "/bin/sh", "-c", "touch "+marker)
	if code := q.wait(10 * time.Second); code != 2 || !strings.Contains(q.logs(), "already in use by pid "+strconv.Itoa(p.cmd.Process.Pid)) {
		t.Errorf("second hitless with the same name: exit %d, %s", code, q.logs())
	}
	if _, err := os.Stat(marker); err == nil {
		t.Error("the second hitless started a child")
	}
	// The command's base name is the default name.
	r := startHitless(t, opts{})
	if rec := r.waitFor(time.Second, msgIs("control socket")); rec.str("path") != filepath.Join(dir, "testserver.sock") {
		t.Errorf("default control socket %q, want testserver.sock in %s", rec.str("path"), dir)
	}
	if res := cli(t, 20*time.Second, nil, "status"); res.code != 2 || !strings.Contains(res.stderr, "orders.sock, testserver.sock") {
		t.Errorf("status with two sockets and no --name: want exit 2 naming both: %v", res)
	}
	if res := cli(t, 20*time.Second, nil, "reload", "--name", "testserver"); res.code != 0 {
		t.Errorf("reload --name testserver: %v", res)
	}
	if gen, _ := status(t, filepath.Join(dir, "testserver.sock")).serving(); gen != 2 {
		t.Errorf("generation %d serves after reload --name testserver", gen)
	}
	if gen, _ := status(t, sock).serving(); gen != 1 {
		t.Errorf("the other service reloaded too: generation %d serves", gen)
	}
}

// Garbage on the control socket gets an error reply naming the problem and
// changes nothing; a client that sends nothing holds up no one else.
func TestControlGarbage(t *testing.T) {
	sock := ctlSocket(t)
	p := startHitless(t, opts{args: []string{"--control", sock}})
	before := getInfo(t, p.addr)
	m := p.mark()

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
		{"unknown command", `{"cmd":"restart"}` + "\n", false, `unknown cmd "restart": valid commands are "reload", "status" and "stop"`},
		{"empty command", `{"cmd":""}` + "\n", false, `empty "cmd"`},
		{"no command", `{"timeout":"1s"}` + "\n", false, `missing field "cmd"`},
		{"extra field", `{"cmd":"reload","force":true}` + "\n", false, `unknown field "force": valid fields are "cmd" and "timeout"`},
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

	st := status(t, sock)
	if gen, pid := st.serving(); gen != 1 || pid != before.PID || len(st.Generations) != 1 || st.ReloadsOK+st.ReloadsFailed != 0 || st.Stopping {
		t.Errorf("after the garbage: %+v", st)
	}
	if in := getInfo(t, p.addr); in.PID != before.PID {
		t.Errorf("pid %d answers, want %d", in.PID, before.PID)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, r := range p.records[m:] {
		switch r.msg() {
		case "started", "SIGHUP: reload", "stop", "control request":
			if r.msg() == "control request" && r.str("cmd") == "status" {
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
	if os.Geteuid() != 0 {
		t.Skip("needs root, to run the client as nobody")
	}
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Skip("needs setpriv (util-linux), to run the client as nobody")
	}
	// nobody must be able to run the binary and reach the socket file.
	pub, err := os.MkdirTemp("", "hl")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(pub) })
	os.Chmod(pub, 0o755)
	client := filepath.Join(pub, "hitless")
	copyBinary(t, bin.hitless, client)
	sock := filepath.Join(pub, "c.sock")

	p := startHitless(t, opts{args: []string{"--control", sock}})
	before := getInfo(t, p.addr)
	m := p.mark()
	asNobody := []string{setpriv, "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--", client}

	for _, cmd := range []string{"reload", "stop", "status"} {
		r := cli(t, 20*time.Second, asNobody, cmd, "--control", sock, "--timeout", "5s")
		if r.code != 3 || !strings.Contains(r.stderr, "permission denied") {
			t.Errorf("%s as nobody through a 0600 socket: want exit 3 and permission denied: %v", cmd, r)
		}
	}
	// Open the file to everyone: the server itself must refuse.
	if err := os.Chmod(sock, 0o666); err != nil {
		t.Fatal(err)
	}
	for _, cmd := range []string{"reload", "stop", "status"} {
		r := cli(t, 20*time.Second, asNobody, cmd, "--control", sock, "--timeout", "5s")
		if r.code != 3 || !strings.Contains(r.stderr, "not authorized: uid 65534") {
			t.Errorf("%s as nobody through a 0666 socket: want exit 3 and not authorized: %v", cmd, r)
		}
	}
	_, rec := p.waitSince(m, 10*time.Second, msgIs("control socket: connection refused"))
	if rec.int("peer_uid") != 65534 {
		t.Errorf("refusal logged for uid %d, want 65534", rec.int("peer_uid"))
	}
	st := status(t, sock)
	if gen, pid := st.serving(); gen != 1 || pid != before.PID || st.ReloadsOK+st.ReloadsFailed != 0 || st.Stopping {
		t.Errorf("after nobody's attempts: %+v", st)
	}
	p.mu.Lock()
	for _, r := range p.records[m:] {
		if r.msg() == "started" || r.msg() == "control request" && r.str("cmd") != "status" {
			t.Errorf("nobody caused %v", r)
		}
	}
	p.mu.Unlock()
	// Root still may.
	if r := cli(t, 30*time.Second, nil, "reload", "--control", sock); r.code != 0 {
		t.Errorf("reload as root: %v", r)
	}
}

func copyBinary(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o755); err != nil {
		t.Fatal(err)
	}
}
