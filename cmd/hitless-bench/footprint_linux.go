package main

import (
	"fmt"

	"github.com/hitless/hitless/internal/harness"
	"github.com/hitless/hitless/supervisor"
)

// helpersOf finds the watcher of hitless (pid) and its standby (0 if
// none waits): its children started in the watcher's and the shim's
// hidden modes.
func helpersOf(pid int) (watcher, standby int, err error) {
	kids, err := harness.Children(pid)
	if err != nil {
		return 0, 0, err
	}
	for k := range kids {
		switch harness.Arg(k, 1) {
		case supervisor.WatchArg:
			watcher = k
		case supervisor.ShimArg:
			standby = k
		}
	}
	if watcher == 0 {
		return 0, 0, fmt.Errorf("hitless (pid %d) has no watcher", pid)
	}
	return watcher, standby, nil
}
