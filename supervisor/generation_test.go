//go:build linux

package supervisor

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestTail(t *testing.T) {
	tl := &tail{max: 16}
	tl.Write([]byte("first line\nsecond\nthird\n"))
	if got := tl.Lines(5); !reflect.DeepEqual(got, []string{"second", "third"}) {
		t.Errorf("Lines = %q", got)
	}
	if got := tl.Lines(1); !reflect.DeepEqual(got, []string{"third"}) {
		t.Errorf("Lines(1) = %q", got)
	}
}

func TestPrefixWriter(t *testing.T) {
	var buf bytes.Buffer
	p := &prefixWriter{w: &buf, prefix: []byte("[g] ")}
	p.Write([]byte("a\nb"))
	p.Write([]byte("c\n\nd"))
	p.flush()
	if got, want := buf.String(), "[g] a\n[g] bc\n[g] \n[g] d\n"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestDedupEnv(t *testing.T) {
	got := dedupEnv([]string{"A=1", "B=2", "A=3", "C"})
	if want := []string{"A=3", "B=2", "C"}; !reflect.DeepEqual(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestResolveFollowsSymlinkEachTime(t *testing.T) {
	root := t.TempDir()
	for _, rel := range []string{"r1", "r2"} {
		os.MkdirAll(filepath.Join(root, rel), 0o755)
		os.WriteFile(filepath.Join(root, rel, "server"), []byte("#!/bin/sh\n"), 0o755)
	}
	current := filepath.Join(root, "current")
	os.Symlink("r1", current)
	dir, prog, err := resolve(current, []string{"./server"}, nil)
	if err != nil || dir != filepath.Join(root, "r1") || prog != filepath.Join(root, "r1", "server") {
		t.Fatalf("resolve = %q %q %v", dir, prog, err)
	}
	os.Remove(current)
	os.Symlink("r2", current)
	if dir, prog, _ = resolve(current, []string{"./server"}, nil); prog != filepath.Join(root, "r2", "server") {
		t.Fatalf("after switching the symlink: %q %q", dir, prog)
	}
	os.Remove(current)
	os.Symlink("missing", current)
	if _, _, err := resolve(current, []string{"./server"}, nil); err == nil || !strings.Contains(err.Error(), "working directory") {
		t.Errorf("dangling release symlink: %v", err)
	}
	if _, _, err := resolve(root, []string{"sh-not-here-xyz"}, []string{"PATH=/nonexistent"}); err == nil || !strings.Contains(err.Error(), "PATH") {
		t.Errorf("missing program: %v", err)
	}
	os.WriteFile(filepath.Join(root, "noexec"), []byte("x"), 0o644)
	if _, _, err := resolve(root, []string{"./noexec"}, nil); err == nil || !strings.Contains(err.Error(), "not an executable") {
		t.Errorf("non-executable program: %v", err)
	}
}

func TestInTree(t *testing.T) {
	if in, known := inTree(os.Getpid(), os.Getpid()); !in || !known {
		t.Error("a process is in its own tree")
	}
	if in, _ := inTree(os.Getpid(), os.Getppid()); !in {
		t.Error("a child is in its parent's tree")
	}
	if in, known := inTree(os.Getppid(), os.Getpid()); in || !known {
		t.Error("a parent is not in its child's tree")
	}
	if _, known := inTree(1<<22+1, os.Getpid()); known {
		t.Error("a pid that does not exist is known")
	}
	if uids := procUIDs(os.Getpid()); len(uids) != 4 || int(uids[0]) != os.Getuid() {
		t.Errorf("procUIDs = %v", uids)
	}
}
