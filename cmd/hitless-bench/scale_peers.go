//go:build linux

package main

import (
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// ---- 8, beside the proxies: 10,000 connections across reloads of nginx
// and HAProxy ----

// peerScaleTargets are the blue/green setups of row 13 whose reload
// replaces the proxy's workers, under the load of row 8: their old
// workers close the idle client connections they hold, where hitless's
// old generation closes only those that stay quiet (see childproc's
// lame duck). Each deploy is one reload. A peer that is not installed
// gives a row that says so.
func peerScaleTargets(s *scenario) []func() *scaleTarget {
	closers := map[string]string{
		"nginx":                                  "nginx's old workers",
		"HAProxy reload":                         "HAProxy's old worker",
		"HAProxy reload, idle-close-on-response": "HAProxy's old worker",
	}
	var out []func() *scaleTarget
	for _, ps := range proxySetups() {
		closer, ok := closers[ps.key]
		if !ok {
			continue
		}
		name := ps.name + ", a deploy at each reload (row " + deploysNum + "'s setup)"
		out = append(out, func() *scaleTarget {
			if s.peerBin(ps.peer) == "" {
				return &scaleTarget{name: name, skipped: "skipped: " + ps.peer + " is not installed"}
			}
			dir := filepath.Join(s.tmp, "scale-"+dirName(ps.key))
			s.check(os.MkdirAll(dir, 0o755))
			tg := ps.blueGreen(s, dir)
			deploys := 0
			return &scaleTarget{name: name, addr: tg.addr, closer: closer, stop: tg.stop,
				drained:      "replaced backends exited (from their deploy's start) in",
				firstDrained: "the backend holding them exited, from the first deploy's start, in",
				reload: func() {
					_, err := tg.deploy()
					s.check(err)
					deploys++
				},
				proof: func() string {
					return fmt.Sprintf("%d deploys, each answered by its new backend on a new connection through the proxy", deploys)
				},
				finish: func(int) ([]time.Duration, time.Duration) {
					gone := tg.gone()
					if len(gone) == 0 {
						return nil, 0
					}
					return gone, gone[0]
				}}
		})
	}
	return out
}
