//go:build linux

package deploytest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/hitless/hitless/internal/harness"
)

// release is the app of each release: the test server, marked with the
// release's name (it reports E2E_MARK on GET /info). A release that needs
// shared/config.yaml refuses to start on a host without it, with the
// message a real one would print.
func release(name, server string, needsConfig bool) string {
	check := ""
	if needsConfig {
		check = `root=$(dirname "$(readlink -f "$0")")/../..
[ -r "$root/shared/config.yaml" ] || { echo "load config: $root/shared/config.yaml: no such file or directory" >&2; exit 1; }
`
	}
	return "#!/bin/sh\n" + check + "E2E_MARK=release-" + name + " exec " + server + ` "$@"` + "\n"
}

type host struct {
	name, root string
	h          *harness.Hitless
}

// markOf is the release that the host's serving child was started from.
func (x *host) markOf(t *testing.T) string {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + x.h.Addr() + "/info")
	if err != nil {
		t.Fatalf("%s: GET /info: %v", x.name, err)
	}
	defer resp.Body.Close()
	var in struct{ Env map[string]string }
	if err := json.NewDecoder(resp.Body).Decode(&in); err != nil {
		t.Fatalf("%s: GET /info: %v", x.name, err)
	}
	return in.Env["E2E_MARK"]
}

func (x *host) current(t *testing.T) string {
	t.Helper()
	target, err := os.Readlink(filepath.Join(x.root, "current"))
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Base(target)
}

// controlRequests counts the control requests (status, reload) hitless
// got from record from on.
func (x *host) controlRequests(from int) []string {
	var cmds []string
	for _, r := range x.h.Records(from) {
		if r.Msg() == "control request" {
			cmds = append(cmds, r.Str("cmd"))
		}
	}
	return cmds
}

// configs/ansible/rolling-deploy.yml against four hitless instances on
// this machine, one per "host" of a local-connection inventory: a release
// that starts everywhere is rolled out to all four; then a release that
// cannot start on host2 (its config file is missing there) is rolled out:
// host1 serves it, host2 keeps serving the release before (its current
// link switched back), host3 and host4 are never touched, and the play
// fails saying why.
func TestAnsibleRollingDeploy(t *testing.T) {
	playbook, err := exec.LookPath("ansible-playbook")
	if err != nil {
		t.Skip("ansible-playbook not installed (Debian: ansible-core); the rolling-deploy playbook is not tested")
	}
	if testing.Short() {
		t.Skip("runs four hitless instances and Ansible; run without -short")
	}
	dir := t.TempDir()
	hitless, server := filepath.Join(dir, "hitless"), filepath.Join(dir, "testserver")
	if err := harness.Build("", hitless, "github.com/hitless/hitless/cmd/hitless"); err != nil {
		t.Fatal(err)
	}
	if err := harness.Build("", server, "github.com/hitless/hitless/internal/e2e/testserver"); err != nil {
		t.Fatal(err)
	}
	// What the controller deploys: one directory per release.
	builds := filepath.Join(dir, "builds")
	for _, r := range []struct {
		name        string
		needsConfig bool
	}{{"v1", false}, {"v2", false}, {"v3", true}} {
		os.MkdirAll(filepath.Join(builds, r.name), 0o755)
		if err := os.WriteFile(filepath.Join(builds, r.name, "app"), []byte(release(r.name, server, r.needsConfig)), 0o755); err != nil {
			t.Fatal(err)
		}
	}

	// Four hosts, each on v1 (installed by hand, as a first deploy would),
	// each with its own hitless; host2 has no config file.
	var hosts []*host
	var inv strings.Builder
	inv.WriteString("[app]\n")
	for i := 1; i <= 4; i++ {
		x := &host{name: fmt.Sprintf("host%d", i), root: filepath.Join(dir, fmt.Sprintf("host%d", i))}
		os.MkdirAll(filepath.Join(x.root, "releases", "v1"), 0o755)
		os.MkdirAll(filepath.Join(x.root, "shared"), 0o755)
		if i != 2 {
			os.WriteFile(filepath.Join(x.root, "shared", "config.yaml"), []byte("listen: :8080\n"), 0o644)
		}
		app, _ := os.ReadFile(filepath.Join(builds, "v1", "app"))
		os.WriteFile(filepath.Join(x.root, "releases", "v1", "app"), app, 0o755)
		if err := os.Symlink(filepath.Join(x.root, "releases", "v1"), filepath.Join(x.root, "current")); err != nil {
			t.Fatal(err)
		}
		x.h = harness.Start(t, harness.Options{Hitless: hitless, Command: []string{filepath.Join(x.root, "current", "app")}})
		fmt.Fprintf(&inv, "%s ansible_connection=local app_root=%s hitless_control=%s\n", x.name, x.root, x.h.Control())
		hosts = append(hosts, x)
	}
	fmt.Fprintf(&inv, "[app:vars]\nansible_python_interpreter=auto_silent\nhitless=%s\nreload_timeout=30s\n", hitless)
	inventory := filepath.Join(dir, "inventory.ini")
	if err := os.WriteFile(inventory, []byte(inv.String()), 0o644); err != nil {
		t.Fatal(err)
	}

	play := func(rel string) (string, error) {
		cmd := exec.Command(playbook, "-i", inventory, "../../configs/ansible/rolling-deploy.yml",
			"-e", "release="+rel, "-e", "artifact="+filepath.Join(builds, rel))
		cmd.Env = append(os.Environ(), "ANSIBLE_NOCOLOR=1", "ANSIBLE_HOME="+filepath.Join(dir, "ansible"),
			"ANSIBLE_LOCAL_TEMP="+filepath.Join(dir, "ansible", "tmp"), "ANSIBLE_REMOTE_TEMP="+filepath.Join(dir, "ansible", "remote"),
			"ANSIBLE_RETRY_FILES_ENABLED=0")
		out, err := cmd.CombinedOutput()
		return string(out), err
	}

	// v2 starts everywhere: every host serves it.
	if out, err := play("v2"); err != nil {
		t.Fatalf("rolling out v2: %v\n%s", err, out)
	}
	for _, x := range hosts {
		if c, m := x.current(t), x.markOf(t); c != "v2" || m != "release-v2" {
			t.Errorf("%s after v2: current -> %s, serving %s", x.name, c, m)
		}
	}

	// v3 needs a config file that host2 lacks.
	marks := make([]int, len(hosts))
	for i, x := range hosts {
		marks[i] = x.h.Mark()
	}
	out, err := play("v3")
	t.Logf("ansible-playbook, release v3:\n%s", out)
	if err == nil {
		t.Fatal("the play succeeded although host2 cannot start v3")
	}
	// Why, in the play's failure: the host, the reload's verdict and the
	// release's own last words.
	for _, want := range []string{
		"host2: release v3 not deployed",
		"reload failed",
		"exited before ready: exit status 1",
		"shared/config.yaml: no such file or directory",
		"current switched back to " + filepath.Join(hosts[1].root, "releases", "v2"),
	} {
		if !strings.Contains(out, want) {
			t.Errorf("the play's output lacks %q", want)
		}
	}
	if m := regexp.MustCompile(`(?m)^host[34]\s+:`).FindString(out); m != "" {
		t.Errorf("the recap lists %q: a host after the failed one was reached", m)
	}
	want := []struct {
		current, serving  string
		reloadsOK         int // v2's, and v3's where it served
		touched, released bool
	}{
		{"v3", "release-v3", 2, true, true},
		{"v2", "release-v2", 1, true, true},
		{"v2", "release-v2", 1, false, false},
		{"v2", "release-v2", 1, false, false},
	}
	for i, x := range hosts {
		w := want[i]
		reqs := x.controlRequests(marks[i])
		st := x.h.Status()
		g, _ := st.Serving()
		if c, m := x.current(t), x.markOf(t); c != w.current || m != w.serving {
			t.Errorf("%s: current -> %s, serving %s; want %s, %s", x.name, c, m, w.current, w.serving)
		}
		if n := len(reqs); (n > 0) != w.touched || (w.touched && reqs[len(reqs)-1] != "reload") {
			t.Errorf("%s: control requests during the v3 play: %v", x.name, reqs)
		}
		if st.ReloadsOK != w.reloadsOK {
			t.Errorf("%s: %d reloads ok, want %d", x.name, st.ReloadsOK, w.reloadsOK)
		}
		if _, err := os.Stat(filepath.Join(x.root, "releases", "v3")); (err == nil) != w.released {
			t.Errorf("%s: releases/v3 installed: %v, want %v", x.name, err == nil, w.released)
		}
		t.Logf("%s: current -> %s, serving generation %d (%s); reloads ok %d, failed %d; control requests during the v3 play: %v",
			x.name, x.current(t), g.Generation, x.markOf(t), st.ReloadsOK, st.ReloadsFailed, reqs)
	}
	if st := hosts[1].h.Status(); st.ReloadsFailed != 1 || !strings.Contains(st.LastFailure, "config.yaml") {
		t.Errorf("host2's hitless: %d failed reloads, last failure %q", st.ReloadsFailed, st.LastFailure)
	}
}

// The example inventory parses, and the playbook passes Ansible's syntax
// check with it.
func TestAnsibleExampleInventory(t *testing.T) {
	playbook, err := exec.LookPath("ansible-playbook")
	if err != nil {
		t.Skip("ansible-playbook not installed (Debian: ansible-core)")
	}
	cmd := exec.Command(playbook, "--syntax-check", "-i", "../../configs/ansible/inventory.ini", "../../configs/ansible/rolling-deploy.yml")
	cmd.Env = append(os.Environ(), "ANSIBLE_NOCOLOR=1", "ANSIBLE_HOME="+t.TempDir())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
}
