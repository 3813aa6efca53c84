package deploytest

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// fakeHitless stands in for "hitless reload": it records its arguments and
// what the current link pointed at when it ran, prints a message, and exits
// with the status the test chose.
const fakeHitless = `#!/bin/sh
printf '%s\n' "$@" > "$FAKE_DIR/args"
readlink "$FAKE_LINK" > "$FAKE_DIR/seen"
[ -z "$FAKE_MESSAGE" ] || echo "$FAKE_MESSAGE"
exit "${FAKE_RC:-0}"
`

type env struct {
	t        *testing.T
	dir      string // scratch directory of the test
	releases string
	current  string
	hitless  string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("bash not installed")
	}
	t.Parallel()
	dir := t.TempDir()
	e := &env{
		t:        t,
		dir:      dir,
		releases: filepath.Join(dir, "releases"),
		current:  filepath.Join(dir, "current"),
		hitless:  filepath.Join(dir, "fake-hitless"),
	}
	if err := os.WriteFile(e.hitless, []byte(fakeHitless), 0o755); err != nil {
		t.Fatal(err)
	}
	return e
}

// artifact makes a build directory holding one file with the given content.
func (e *env) artifact(content string) string {
	e.t.Helper()
	dir, err := os.MkdirTemp(e.dir, "build-")
	if err != nil {
		e.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "app"), []byte(content), 0o755); err != nil {
		e.t.Fatal(err)
	}
	return dir
}

type result struct {
	code   int
	output string
}

// deploy runs deploy.sh with the fake hitless exiting rc.
func (e *env) deploy(rc int, message string, args ...string) result {
	e.t.Helper()
	script, err := filepath.Abs("../../scripts/deploy.sh")
	if err != nil {
		e.t.Fatal(err)
	}
	cmd := exec.Command("bash", append([]string{script}, args...)...)
	cmd.Env = append(os.Environ(),
		"HITLESS="+e.hitless,
		"FAKE_DIR="+e.dir,
		"FAKE_LINK="+e.current,
		"FAKE_MESSAGE="+message,
		"FAKE_RC="+string(rune('0'+rc)),
	)
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return result{0, string(out)}
	case errors.As(err, &exit):
		return result{exit.ExitCode(), string(out)}
	}
	e.t.Fatalf("running deploy.sh: %v", err)
	return result{}
}

// std returns the usual flags plus extra ones and the artifact.
func (e *env) std(extra ...string) []string {
	return append([]string{"--releases", e.releases, "--current", e.current}, extra...)
}

func (e *env) link() string {
	e.t.Helper()
	target, err := os.Readlink(e.current)
	if err != nil {
		e.t.Fatalf("current link: %v", err)
	}
	return target
}

func (e *env) read(name string) string {
	e.t.Helper()
	b, err := os.ReadFile(filepath.Join(e.dir, name))
	if err != nil {
		e.t.Fatal(err)
	}
	return string(b)
}

func (e *env) releaseNames() []string {
	e.t.Helper()
	ents, err := os.ReadDir(e.releases)
	if err != nil {
		e.t.Fatal(err)
	}
	var names []string
	for _, ent := range ents {
		if ent.IsDir() && !strings.HasPrefix(ent.Name(), ".") {
			names = append(names, ent.Name())
		}
	}
	return names
}

func TestDeploySwitchesLinkAndReloads(t *testing.T) {
	e := newEnv(t)
	r := e.deploy(0, "reload ok: generation 2 serving",
		e.std("--name", "v1", "--control", "/run/app/control.sock", "--timeout", "5s", e.artifact("v1"))...)
	if r.code != 0 {
		t.Fatalf("exit %d:\n%s", r.code, r.output)
	}
	want := filepath.Join(e.releases, "v1")
	if got := e.link(); got != want {
		t.Errorf("current -> %s, want %s", got, want)
	}
	if b, err := os.ReadFile(filepath.Join(e.current, "app")); err != nil || string(b) != "v1" {
		t.Errorf("current/app = %q, %v", b, err)
	}
	if got := e.read("args"); got != "reload\n--timeout\n5s\n--control\n/run/app/control.sock\n" {
		t.Errorf("hitless called with %q", got)
	}
	// The link must be switched before the reload, or the new child
	// would start from the old release.
	if got := strings.TrimSpace(e.read("seen")); got != want {
		t.Errorf("during the reload current -> %q, want %q", got, want)
	}
	if !strings.Contains(r.output, "hitless: reload ok: generation 2 serving") {
		t.Errorf("hitless's verdict not shown:\n%s", r.output)
	}
}

func TestFailedReloadRollsBack(t *testing.T) {
	e := newEnv(t)
	if r := e.deploy(0, "", e.std("--name", "v1", e.artifact("v1"))...); r.code != 0 {
		t.Fatalf("first deploy: exit %d:\n%s", r.code, r.output)
	}
	v1, v2 := filepath.Join(e.releases, "v1"), filepath.Join(e.releases, "v2")

	r := e.deploy(1, "reload failed: new child exited with status 1", e.std("--name=v2", e.artifact("v2"))...)
	if r.code != 1 {
		t.Fatalf("exit %d, want 1:\n%s", r.code, r.output)
	}
	if got := e.link(); got != v1 {
		t.Errorf("current -> %s after a failed reload, want it back at %s", got, v1)
	}
	if got := strings.TrimSpace(e.read("seen")); got != v2 {
		t.Errorf("during the reload current -> %q, want the new release %q", got, v2)
	}
	for _, want := range []string{
		"hitless: reload failed: new child exited with status 1",
		"deploy of v2 failed: hitless reload exited with status 1",
		"switched " + e.current + " back to " + v1,
		"kept in " + v2,
	} {
		if !strings.Contains(r.output, want) {
			t.Errorf("output lacks %q:\n%s", want, r.output)
		}
	}
	if _, err := os.Stat(v2); err != nil {
		t.Errorf("failed release not kept for inspection: %v", err)
	}
}

func TestFailedFirstDeployRemovesLink(t *testing.T) {
	e := newEnv(t)
	r := e.deploy(1, "cannot connect to control socket", e.std(e.artifact("v1"))...)
	if r.code != 1 {
		t.Fatalf("exit %d, want 1:\n%s", r.code, r.output)
	}
	if _, err := os.Lstat(e.current); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("current still exists after a failed first deploy: %v", err)
	}
	if !strings.Contains(r.output, "there was no previous release") {
		t.Errorf("output:\n%s", r.output)
	}
}

func TestDeployBinary(t *testing.T) {
	e := newEnv(t)
	bin := filepath.Join(e.dir, "myserver")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if r := e.deploy(0, "", e.std("--name", "b1", bin)...); r.code != 0 {
		t.Fatalf("exit %d:\n%s", r.code, r.output)
	}
	fi, err := os.Stat(filepath.Join(e.current, "myserver"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm()&0o111 == 0 {
		t.Errorf("binary lost its execute bits: %v", fi.Mode())
	}
}

func TestDefaultNamesAreUnique(t *testing.T) {
	e := newEnv(t)
	for range 2 {
		if r := e.deploy(0, "", e.std(e.artifact("x"))...); r.code != 0 {
			t.Fatalf("exit %d:\n%s", r.code, r.output)
		}
	}
	names := e.releaseNames()
	stamp := regexp.MustCompile(`^\d{8}T\d{6}Z(-\d+)?$`)
	if len(names) != 2 || !stamp.MatchString(names[0]) || !stamp.MatchString(names[1]) {
		t.Errorf("releases = %q, want two distinct timestamps", names)
	}
}

func TestPrune(t *testing.T) {
	e := newEnv(t)
	// Releases deployed within one second have near-equal mtimes; give
	// each an explicit age so that "newest" is unambiguous.
	base := time.Now().Add(-time.Hour)
	for i, name := range []string{"r1", "r2", "r3", "r4"} {
		if r := e.deploy(0, "", e.std("--keep", "1", "--name", name, e.artifact(name))...); r.code != 0 {
			t.Fatalf("deploy %s: exit %d:\n%s", name, r.code, r.output)
		}
		at := base.Add(time.Duration(i) * time.Minute)
		if err := os.Chtimes(filepath.Join(e.releases, name), at, at); err != nil {
			t.Fatal(err)
		}
	}
	// Not releases: left alone whatever their age.
	for _, p := range []string{".cache", "notes.txt"} {
		if err := os.WriteFile(filepath.Join(e.releases, p), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if r := e.deploy(0, "", e.std("--keep", "1", "--name", "r5", e.artifact("r5"))...); r.code != 0 {
		t.Fatalf("deploy r5: exit %d:\n%s", r.code, r.output)
	}
	// --keep 1 keeps r5 (current), and r4 too: the previous release may
	// still be draining.
	if got := strings.Join(e.releaseNames(), " "); got != "r4 r5" {
		t.Errorf("releases after prune = %q, want \"r4 r5\"", got)
	}
	for _, p := range []string{".cache", "notes.txt"} {
		if _, err := os.Stat(filepath.Join(e.releases, p)); err != nil {
			t.Errorf("pruning removed %s: %v", p, err)
		}
	}
}

func TestFailedReloadDoesNotPrune(t *testing.T) {
	e := newEnv(t)
	for _, name := range []string{"a", "b"} {
		if r := e.deploy(0, "", e.std("--keep", "5", "--name", name, e.artifact(name))...); r.code != 0 {
			t.Fatalf("exit %d:\n%s", r.code, r.output)
		}
	}
	if r := e.deploy(1, "", e.std("--keep", "1", "--name", "c", e.artifact("c"))...); r.code != 1 {
		t.Fatalf("exit %d, want 1:\n%s", r.code, r.output)
	}
	if got := strings.Join(e.releaseNames(), " "); got != "a b c" {
		t.Errorf("releases = %q; a failed deploy must not prune", got)
	}
}

func TestUsageErrors(t *testing.T) {
	e := newEnv(t)
	art := e.artifact("x")
	file := filepath.Join(e.dir, "regular")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if r := e.deploy(0, "", e.std("--name", "taken", art)...); r.code != 0 {
		t.Fatalf("setup deploy: %d\n%s", r.code, r.output)
	}
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no releases", []string{"--current", e.current, art}, "--releases DIR is required"},
		{"no current", []string{"--releases", e.releases, art}, "--current LINK is required"},
		{"no artifact", e.std(), "no ARTIFACT given"},
		{"missing artifact", e.std(filepath.Join(e.dir, "nope")), "does not exist"},
		{"two artifacts", e.std(art, art), "more than one ARTIFACT"},
		{"unknown flag", e.std("--bogus", art), "unknown flag --bogus"},
		{"flag without value", e.std(art, "--timeout"), "--timeout needs a value"},
		{"flag as value", []string{"--releases", "--current", e.current, art}, "--releases needs a value"},
		{"bad keep", e.std("--keep", "0", art), "--keep '0': want a positive integer"},
		{"bad timeout", e.std("--timeout", "90", art), "--timeout '90': want a duration"},
		{"bad name", e.std("--name", "../evil", art), "--name '../evil'"},
		{"existing name", e.std("--name", "taken", art), "already exists"},
		{"current not a link", []string{"--releases", e.releases, "--current", file, art}, "is not a symlink"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.deploy(0, "", tt.args...)
			if r.code != 2 || !strings.Contains(r.output, tt.want) {
				t.Errorf("exit %d, output:\n%s\nwant exit 2 and %q", r.code, r.output, tt.want)
			}
		})
	}
	if got := e.link(); got != filepath.Join(e.releases, "taken") {
		t.Errorf("a usage error changed current: -> %s", got)
	}
}

func TestMissingHitless(t *testing.T) {
	e := newEnv(t)
	e.hitless = filepath.Join(e.dir, "no-such-hitless")
	r := e.deploy(0, "", e.std(e.artifact("x"))...)
	if r.code != 2 || !strings.Contains(r.output, "hitless binary") {
		t.Errorf("exit %d:\n%s", r.code, r.output)
	}
}

func TestHelp(t *testing.T) {
	e := newEnv(t)
	r := e.deploy(0, "", "--help")
	if r.code != 0 || !strings.HasPrefix(r.output, "Usage: deploy.sh") {
		t.Errorf("exit %d:\n%s", r.code, r.output)
	}
}
