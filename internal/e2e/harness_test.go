//go:build linux

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hitless/hitless/internal/harness"
	"github.com/hitless/hitless/supervisor"
)

// bin holds the binaries TestMain builds.
var bin struct {
	hitless string // with the race detector when the tests have it
	client  string // the same without it: polled for hitless status
	server  string // ./testserver
}

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "hitless-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	// Children may run as another user (--user, setpriv): the binaries
	// must be reachable for them.
	os.Chmod(dir, 0o755)
	// A hitless run without --control takes a socket in $XDG_RUNTIME_DIR:
	// give this run its own, so that concurrent test runs (and a hitless
	// on the machine) do not meet.
	os.Setenv("XDG_RUNTIME_DIR", filepath.Join(dir, "run"))
	os.Unsetenv("HITLESS_CONTROL")
	bin.hitless = filepath.Join(dir, "hitless")
	bin.client = bin.hitless
	bin.server = filepath.Join(dir, "testserver")
	builds := [][]string{{bin.server, "github.com/hitless/hitless/internal/e2e/testserver"}}
	if raceEnabled {
		// Each run of a client built with the race detector costs twice
		// as much, and the status is polled hundreds of times.
		bin.client = filepath.Join(dir, "hitless-client")
		builds = append(builds,
			[]string{bin.hitless, "github.com/hitless/hitless/cmd/hitless", "-race"},
			[]string{bin.client, "github.com/hitless/hitless/cmd/hitless"})
	} else {
		builds = append(builds, []string{bin.hitless, "github.com/hitless/hitless/cmd/hitless"})
	}
	for _, b := range builds {
		if err := harness.Build("", b[0], b[1], b[2:]...); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	return m.Run()
}

// start runs hitless around the test server, given srv flags, or around
// o.Command if set, and waits until a generation serves (see
// harness.Start).
func start(t *testing.T, o harness.Options, srv ...string) *harness.Hitless {
	t.Helper()
	if o.Hitless == "" {
		o.Hitless = bin.hitless
	}
	o.Client = bin.client
	if o.Command == nil {
		o.Command = append([]string{bin.server}, srv...)
	}
	return harness.Start(t, o)
}

// startRaw runs the hitless binary with args and collects its stderr.
func startRaw(t *testing.T, env []string, args ...string) *harness.Hitless {
	t.Helper()
	return harness.Launch(t, harness.Options{Hitless: bin.hitless, Env: env}, args...)
}

// work sends POST /work to the test server (whose handler takes delay)
// from workers clients, for at most a minute, until stopped. Each request
// must answer 200.
func work(addr string, workers int, keepAlive bool, delay time.Duration) *harness.Load {
	return harness.StartLoad(context.Background(), harness.LoadOptions{
		URL:       harness.WorkURL(addr, delay),
		Workers:   workers,
		KeepAlive: keepAlive,
		Duration:  time.Minute,
		Timeout:   20 * time.Second,
		Want:      http.StatusOK,
	})
}

// waitOK waits until the load has n more successes in its current phase.
func waitOK(t *testing.T, l *harness.Load, n int64) {
	t.Helper()
	if err := l.WaitOK(n, 20*time.Second); err != nil {
		t.Fatal(err)
	}
}

// info is what the test server reports on GET /info.
type info struct {
	PID        int               `json:"pid"`
	PPID       int               `json:"ppid"`
	PGID       int               `json:"pgid"`
	Generation string            `json:"generation"`
	Env        map[string]string `json:"env"`
	Inode      uint64            `json:"inode"`
	FDs        []string          `json:"fds"`
}

func getInfo(t *testing.T, addr string) info {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + addr + "/info")
	if err != nil {
		t.Fatalf("GET /info: %v", err)
	}
	defer resp.Body.Close()
	var in info
	if err := json.NewDecoder(resp.Body).Decode(&in); err != nil {
		t.Fatalf("GET /info: %v", err)
	}
	return in
}

// children lists the pids whose parent is pid, zombies included, with
// their state letter; hitless's helpers are left out: its watcher (see
// supervisor/watcher.go), a child of hitless for its whole life, and its
// standby (supervisor/standby.go).
func children(t *testing.T, pid int) map[int]string {
	t.Helper()
	kids, err := harness.Children(pid)
	if err != nil {
		t.Fatal(err)
	}
	for k := range kids {
		// hitless's helpers: its watcher, and its standby, the shim
		// forked ahead for the next generation (a shim that is a
		// generation's has executed its program by the time it counts
		// as started).
		if mode := harness.Arg(k, 1); mode == supervisor.WatchArg || mode == supervisor.ShimArg {
			delete(kids, k)
		}
	}
	return kids
}

// usage is what /proc says pid uses.
func usage(t *testing.T, pid int) harness.Usage {
	t.Helper()
	u, err := harness.ProcUsage(pid)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// waitUntil polls cond, a check of outside state with no event to wait
// on (the kernel's process table), until it holds or d passes.
func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, d)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// gens is a status predicate: hitless has exactly n generations.
func gens(n int) func(harness.Status) bool {
	return func(s harness.Status) bool { return len(s.Generations) == n }
}

// serves is a status predicate: generation gen serves.
func serves(gen int) func(harness.Status) bool {
	return func(s harness.Status) bool { g, ok := s.Serving(); return ok && g.Generation == gen }
}

// mustContain fails unless s contains every one of want.
func mustContain(t *testing.T, what, s string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(s, w) {
			t.Errorf("%s %q lacks %q", what, s, w)
		}
	}
}
