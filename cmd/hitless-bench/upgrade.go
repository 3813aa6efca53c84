//go:build linux

package main

import (
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/hitless/hitless/internal/harness"
)

// ---- 11: hitless upgrading itself, and tableflip's upgrade ----

// benchUpgrade upgrades, under the POST load of rows 3 and 4, hitless
// itself and then a server built on cloudflare/tableflip's documented
// pattern, as many times each, a new binary moved over the old one
// before each upgrade.
func benchUpgrade(s *scenario) []row {
	if s.tableflip == "" {
		s.Fatalf("scenario 11 needs -tableflip (cmd/hitless-bench/tableflipserver)")
	}
	rows := upgradeHitless(s)
	return append(rows, upgradeTableflip(s)...)
}

// upgradeHitless runs hitless from a copy of its binary, and upgrades it
// with `hitless upgrade` after each deploy; the time to the verdict is
// taken around the command.
func upgradeHitless(s *scenario) []row {
	p := s.plan
	live := filepath.Join(s.tmp, "hitless")
	s.check(harness.Install(s.hitless, live))
	h := harness.Start(s, harness.Options{Hitless: live, Client: s.hitless, Command: []string{s.server}})
	pid := h.PID()
	child, _ := h.Status().Serving()
	var took []time.Duration
	var ok, samePID, newExe, sameChild int
	clients, tallies, elapsed := s.upgradesUnderLoad(h.Addr(), func() {
		s.check(harness.Install(s.hitless, live))
		res, err := harness.RunCLI(3*time.Minute, s.hitless, "upgrade", "--control", h.Control())
		s.check(err)
		took = append(took, res.Took)
		if res.Code == 0 && strings.Contains(res.Stdout, fmt.Sprintf("upgraded: hitless pid %d ", pid)) {
			ok++
		} else {
			logf("hitless upgrade: %s", res)
		}
		st := h.Status()
		if st.PID == pid && harness.Alive(pid) {
			samePID++
		}
		if harness.SameFile(fmt.Sprintf("/proc/%d/exe", pid), live) {
			newExe++
		}
		if g, serving := st.Serving(); serving && g.PID == child.PID {
			sameChild++
		}
	})
	h.Stop()
	n := p.upgrades
	other := fmt.Sprintf("%d upgrades, one every %v, each after a new binary was moved over the old: `hitless upgrade` exited 0 %d of %d times, "+
		"its time to the verdict median %s, max %s; after each, hitless's pid unchanged %d of %d, /proc/PID/exe the new file %d of %d, "+
		"the serving child's pid unchanged %d of %d",
		n, p.upgradeEvery, ok, n, ms(median(took)), ms(maxOf(took)), samePID, n, newExe, n, sameChild, n)
	name := "hitless upgrades itself (`hitless upgrade`)"
	logTotals(name, clients, tallies)
	return clientRows("11", name, other, "", clients, tallies, elapsed)
}

// upgradeTableflip runs the tableflip server from a copy of its binary,
// and upgrades it with SIGHUP after each deploy, as tableflip's README
// says; each upgrade is timed until the new process serves, and until
// the old one has exited.
func upgradeTableflip(s *scenario) []row {
	p := s.plan
	live := filepath.Join(s.tmp, "tableflipserver")
	s.check(harness.Install(s.tableflip, live))
	addr, err := harness.FreeAddr()
	s.check(err)
	f, err := startFlip(live, addr, s.tmp)
	s.check(err)
	s.Cleanup(f.stop)
	pids := []string{fmt.Sprint(f.pid)}
	var serving, exited []time.Duration
	clients, tallies, elapsed := s.upgradesUnderLoad(addr, func() {
		s.check(harness.Install(s.tableflip, live))
		sv, ex, err := f.upgrade(time.Minute)
		s.check(err)
		serving, exited = append(serving, sv), append(exited, ex)
		pids = append(pids, fmt.Sprint(f.pid))
	})
	n := p.upgrades
	other := fmt.Sprintf("%d upgrades, one every %v, each after a new binary was moved over the old: SIGHUP → the new process serves "+
		"(the pid file names it, and it answers on a new connection) median %s, max %s; SIGHUP → the old process has exited median %s, max %s; "+
		"a new pid at each upgrade: %s",
		n, p.upgradeEvery, ms(median(serving)), ms(maxOf(serving)), ms(median(exited)), ms(maxOf(exited)), strings.Join(pids, " → "))
	name := "tableflip's upgrade (cloudflare/tableflip v1.2.3, as its README shows)"
	logTotals(name, clients, tallies)
	return clientRows("11", name, other, "", clients, tallies, elapsed)
}

// upgradesUnderLoad sends the load of rows 3 and 4 to addr and calls
// upgrade p.upgrades times, one every p.upgradeEvery; before the first
// and after the last, the load runs an interval with nothing else.
func (s *scenario) upgradesUnderLoad(addr string, upgrade func()) ([]client, []*harness.Tally, time.Duration) {
	p := s.plan
	clients := reloadClients()
	// The load is stopped an interval after the last upgrade; its bound
	// allows for upgrades that take as long as their own timeouts.
	bound := time.Duration(p.upgrades+1)*p.upgradeEvery + time.Duration(p.upgrades)*3*time.Minute
	loads := startLoads(clients, addr, bound)
	s.Cleanup(func() { // ends the load at once if an upgrade fails
		for _, l := range loads {
			l.Stop()
		}
	})
	start := time.Now()
	for i := range p.upgrades {
		time.Sleep(time.Until(start.Add(time.Duration(i+1) * p.upgradeEvery)))
		upgrade()
	}
	time.Sleep(p.upgradeEvery)
	return clients, endLoads(loads, (*harness.Load).Stop), time.Since(start)
}
