//go:build linux

package e2e

import (
	"encoding/json"
	"fmt"
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

// pid1 returns the wrapper that runs hitless as PID 1 of a new PID
// namespace with its own /proc, as a container runtime does, or skips the
// test saying why it cannot.
func pid1(t *testing.T) []string {
	t.Helper()
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		t.Skip("hitless as PID 1 needs unshare(1) (Debian: util-linux) to make a PID namespace; not installed")
	}
	if os.Geteuid() != 0 {
		t.Skip("hitless as PID 1 needs root to make a PID namespace (unshare --pid --mount-proc)")
	}
	return []string{unshare, "--pid", "--fork", "--mount-proc"}
}

// orphanMaker runs the test server (with args) behind a shell that leaves,
// at each start, an orphan with a zombie: a `sleep 1` whose parent has
// exited (so it is re-parented to PID 1), and whose own child, a `sleep
// 0.1`, stays a zombie once it exits, since sleep never waits. When the
// orphan exits, PID 1 must reap it, and then the zombie re-parented to it.
func orphanMaker(args ...string) []string {
	script := `(sh -c 'sleep 0.1 & exec sleep 1' &); exec "$@"`
	return append([]string{"/bin/sh", "-c", script, "sh", bin.server}, args...)
}

// nsProc is what the PID namespace's own /proc says: each process, by its
// pid inside the namespace, with its state letter and name. hostPID is
// any process in the namespace (hitless), whose root is where the
// namespace's /proc is mounted.
func nsProc(t *testing.T, hostPID int) map[int]string {
	t.Helper()
	root := fmt.Sprintf("/proc/%d/root/proc", hostPID)
	ents, err := os.ReadDir(root)
	if err != nil {
		t.Fatalf("the namespace's /proc: %v", err)
	}
	out := map[int]string{}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join(root, e.Name(), "stat"))
		if err != nil {
			continue // gone since the listing
		}
		// "pid (comm) S ppid ...": comm may hold spaces, not ')'.
		s := string(b)
		open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || end < open || len(s) < end+3 {
			continue
		}
		out[pid] = s[end+2:end+3] + " " + s[open+1:end]
	}
	return out
}

// zombiesOrSleepers lists the namespace's zombies and the orphans of
// orphanMaker still running.
func zombiesOrSleepers(procs map[int]string) []string {
	var left []string
	for pid, p := range procs {
		if strings.HasPrefix(p, "Z ") || strings.HasSuffix(p, " sleep") {
			left = append(left, fmt.Sprintf("%d %s", pid, p))
		}
	}
	return left
}

// hitless as PID 1 of a container, stopped by the runtime's SIGTERM or by
// SIGINT (docker stop, Ctrl-C on docker run): each start of the child
// leaves an orphan with a zombie, and once the orphans exit the
// namespace's /proc holds no zombie and no orphan, across a reload too;
// the signal drains the serving child (a stream in progress completes)
// and hitless exits 0.
func TestContainerPID1(t *testing.T) {
	wrap := pid1(t)
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			p := start(t, harness.Options{Wrap: wrap, Command: orphanMaker()})
			if in := getInfo(t, p.Addr()); in.PPID != 1 {
				t.Fatalf("the child's parent is pid %d in the namespace, want hitless as 1", in.PPID)
			}
			if procs := nsProc(t, p.PID()); procs[1] != "S hitless" && procs[1] != "R hitless" {
				t.Fatalf("PID 1 of the namespace is %q, want hitless: %v", procs[1], procs)
			}
			// The zombie appears within 0.1 s of the start and lasts until
			// its parent, the orphan, exits a second after it.
			waitUntil(t, 10*time.Second, "a zombie in the namespace", func() bool {
				for _, p := range nsProc(t, p.PID()) {
					if strings.HasPrefix(p, "Z ") {
						return true
					}
				}
				return false
			})
			p.ReloadDrained()
			var left []string
			waitUntil(t, 10*time.Second, "no zombie and no orphan left in the namespace", func() bool {
				left = zombiesOrSleepers(nsProc(t, p.PID()))
				return len(left) == 0
			})
			stream := harness.OpenStream(p.Addr(), 5, 100*time.Millisecond)
			<-stream.First()
			m := p.Mark()
			p.Signal(sig)
			if err := stream.Wait(10 * time.Second); err != nil {
				t.Errorf("the stream in progress at %v: %v", sig, err)
			}
			if code := p.Wait(30 * time.Second); code != 0 {
				t.Errorf("exit status %d after %v, want 0", code, sig)
			}
			_, r := p.WaitSince(m, time.Second, harness.IsGen("stopped", 2))
			if r.Str("status") != "exit status 0" {
				t.Errorf("the serving child ended with %q, want a drain to exit status 0", r.Str("status"))
			}
		})
	}
}

// The exit status of hitless as PID 1 is the container's: a child that
// cannot start makes hitless exit 1 with the reason; one that does not
// drain by --drain-timeout is killed and hitless exits 137 (128+SIGKILL),
// as the signal table of docs/run.md says.
func TestContainerExitStatus(t *testing.T) {
	wrap := pid1(t)
	t.Run("first child fails", func(t *testing.T) {
		mode := filepath.Join(t.TempDir(), "mode")
		os.WriteFile(mode, []byte("exit"), 0o644)
		p := harness.Launch(t, harness.Options{Hitless: bin.hitless, Wrap: wrap},
			"run", "--log-format", "json", "--listen", "tcp://127.0.0.1:0", "--control", filepath.Join(harness.ShortDir(t), "c.sock"),
			"--", bin.server, "-mode-file", mode)
		if code := p.Wait(20 * time.Second); code != 1 {
			t.Errorf("exit status %d, want 1", code)
		}
		mustContain(t, "hitless's output", p.Output(), "first child", "exit status 1", "mode exit: failing at start on purpose")
	})
	t.Run("killed at the drain deadline", func(t *testing.T) {
		mode := filepath.Join(t.TempDir(), "mode")
		os.WriteFile(mode, []byte("ignore-term"), 0o644)
		p := start(t, harness.Options{Wrap: wrap, Args: []string{"--drain-timeout", "1s"}}, "-mode-file", mode)
		p.Signal(syscall.SIGTERM)
		if code := p.Wait(20 * time.Second); code != 128+int(syscall.SIGKILL) {
			t.Errorf("exit status %d, want %d", code, 128+int(syscall.SIGKILL))
		}
	})
}

// configs/Containerfile builds, with buildah where it is installed (the
// base image replaced by scratch: this machine reaches no image
// registry), and the image runs hitless as its entrypoint with the
// runtime's stop signal SIGTERM; the hitless in it answers.
func TestContainerfileBuilds(t *testing.T) {
	buildah, err := exec.LookPath("buildah")
	if err != nil {
		t.Skip("no container builder: buildah (Debian: buildah) is not installed, so configs/Containerfile is not built here")
	}
	if testing.Short() {
		t.Skip("builds an image; run without -short")
	}
	store := t.TempDir()
	ctx := filepath.Join(store, "context")
	os.Mkdir(ctx, 0o755)
	static := []string{"CGO_ENABLED=0"}
	for _, b := range []struct{ dir, out string }{{"../..", "hitless"}, {"../../examples/grpc", "app"}} {
		pkg := "."
		if b.out == "hitless" {
			pkg = "./cmd/hitless"
		}
		cmd := exec.Command("go", "build", "-o", filepath.Join(ctx, b.out), pkg)
		cmd.Dir, cmd.Env = b.dir, append(os.Environ(), static...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("building %s: %v\n%s", b.out, err, out)
		}
	}
	// A store of the test's own, and chroot isolation: no daemon, no
	// namespaces to set up.
	xdg := filepath.Join(store, "xdg")
	os.Mkdir(xdg, 0o700)
	run := func(args ...string) string {
		t.Helper()
		argv := append([]string{"--root", filepath.Join(store, "root"), "--runroot", filepath.Join(store, "run"), "--storage-driver", "vfs"}, args...)
		cmd := exec.Command(buildah, argv...)
		cmd.Env = append(os.Environ(), "XDG_RUNTIME_DIR="+xdg)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("buildah %s: %v\n%s%s", strings.Join(args, " "), err, out, stderr.String())
		}
		return strings.TrimSpace(string(out))
	}
	image := "localhost/hitless-containerfile-test"
	run("build", "--isolation", "chroot", "--build-arg", "BASE=scratch", "-f", "../../configs/Containerfile", "-t", image, ctx)
	var cfg struct {
		OCIv1 struct {
			Config struct {
				Entrypoint, Cmd []string
				StopSignal      string
			} `json:"config"`
		} `json:"OCIv1"`
	}
	if err := json.Unmarshal([]byte(run("inspect", "--type", "image", image)), &cfg); err != nil {
		t.Fatal(err)
	}
	c := cfg.OCIv1.Config
	if len(c.Entrypoint) < 2 || c.Entrypoint[0] != "/usr/local/bin/hitless" || c.Entrypoint[1] != "run" || c.StopSignal != "SIGTERM" {
		t.Errorf("image config: entrypoint %q, stop signal %q; want hitless run as PID 1, stopped by SIGTERM", c.Entrypoint, c.StopSignal)
	}
	if len(c.Cmd) == 0 || c.Cmd[0] != "/app/bin/app" {
		t.Errorf("image cmd %q, want the app", c.Cmd)
	}
	ctr := run("from", image)
	if v := run("run", "--isolation", "chroot", ctr, "--", "/usr/local/bin/hitless", "--version"); !strings.HasPrefix(v, "hitless version") {
		t.Errorf("hitless --version in the image: %q", v)
	}
	run("rm", ctr)
	run("rmi", "--all", "--force")
}
