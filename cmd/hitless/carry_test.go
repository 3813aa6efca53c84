//go:build linux

package main

import (
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/spf13/pflag"

	"github.com/hitless/hitless/upgrade"
)

// The "run" section an upgrade carries is a format: a later build reads
// what this one writes, by these names.
func TestRunStateFormat(t *testing.T) {
	b, _ := json.Marshal(runState{Config: "/etc/hitless/app.yaml", Data: []byte("drain_timeout: 5s\n"), Kept: keptKeys})
	const want = `{"config":"/etc/hitless/app.yaml","data":"ZHJhaW5fdGltZW91dDogNXMK","kept":["listen","pid_file"]}`
	if string(b) != want {
		t.Errorf("run section %s, want %s", b, want)
	}
}

// A state from a release that did not carry its settings (no "run"
// section) keeps the sockets and the pid file as that release ran them:
// the verdict says so, and so does every later one. The pid file the
// config file names now is this process's only if it holds its pid.
func TestSettingsFromARelease(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "app.yaml")
	os.WriteFile(conf, []byte("drain_timeout: 5s\n"), 0o644)
	log := slog.New(slog.DiscardHandler)

	r := &runFlags{config: conf}
	if err := r.takeSettings(upgrade.NewState(1, "14f122a")); err != nil {
		t.Fatal(err)
	}
	if !r.legacy || !slices.Equal(r.kept, keptKeys) {
		t.Fatalf("legacy %v, kept %v", r.legacy, r.kept)
	}
	if note := r.settingsNote(log); !strings.Contains(note, "the previous release did not carry its settings: listen and pid_file stay as it ran them") {
		t.Errorf("note %q", note)
	}

	fs := pflag.NewFlagSet("run", pflag.ContinueOnError)
	fs.String("pid-file", "", "")
	mine, other := filepath.Join(dir, "mine.pid"), filepath.Join(dir, "other.pid")
	os.WriteFile(mine, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644)
	os.WriteFile(other, []byte("1\n"), 0o644)
	for path, want := range map[string]bool{mine: true, other: false, filepath.Join(dir, "none.pid"): false} {
		if got := r.keepsPIDFile(fs, path); got != want {
			t.Errorf("keepsPIDFile(%s) = %v, want %v", filepath.Base(path), got, want)
		}
	}
	fs.Set("pid-file", other) // the command line, as at the first start
	if !r.keepsPIDFile(fs, other) {
		t.Error("a pid file given on the command line is not kept")
	}

	st := upgrade.NewState(2, "this build")
	st.Put("run", runState{Config: conf, Data: []byte("drain_timeout: 5s\n"), Kept: keptKeys})
	later := &runFlags{config: conf}
	if err := later.takeSettings(st); err != nil {
		t.Fatal(err)
	}
	note := later.settingsNote(log)
	if later.legacy || !strings.Contains(note, "listen and pid_file are still as a release that did not carry its settings ran them") || strings.Contains(note, "changed since") {
		t.Errorf("a later upgrade: legacy %v, note %q", later.legacy, note)
	}
}
