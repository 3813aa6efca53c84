package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/hitless/hitless/internal/harness"
	"github.com/hitless/hitless/supervisor"
)

// watcherOf finds the watcher of hitless (pid): its child started in the
// watcher's hidden mode.
func watcherOf(pid int) (int, error) {
	kids, err := harness.Children(pid)
	if err != nil {
		return 0, err
	}
	for k := range kids {
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", k))
		if args := strings.Split(string(cmdline), "\x00"); len(args) > 1 && args[1] == supervisor.WatchArg {
			return k, nil
		}
	}
	return 0, fmt.Errorf("hitless (pid %d) has no watcher", pid)
}
