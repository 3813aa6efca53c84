//go:build linux

package main

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hitless/hitless/internal/harness"
)

// The tableflip server upgrades to a new process at each SIGHUP, the old
// one exits and is reaped by the bench, and stop leaves nothing behind.
func TestFlipServer(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "tableflipserver")
	if err := harness.Build("", bin, "github.com/hitless/hitless/cmd/hitless-bench/tableflipserver"); err != nil {
		t.Fatal(err)
	}
	addr, err := harness.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	f, err := startFlip(bin, addr, dir)
	if err != nil {
		t.Fatal(err)
	}
	pids := []int{f.pid}
	for range 2 {
		old := f.pid
		serving, exited, err := f.upgrade(30 * time.Second)
		if err != nil {
			f.stop()
			t.Fatal(err)
		}
		if f.pid == old || harness.Alive(old) || serving > exited {
			t.Errorf("upgrade from pid %d: now pid %d, old alive %v, serving after %v, old gone after %v", old, f.pid, harness.Alive(old), serving, exited)
		}
		pids = append(pids, f.pid)
	}
	f.stop()
	for _, pid := range pids {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
			t.Errorf("pid %d still exists (a zombie nobody reaped?)", pid)
		}
	}
}
