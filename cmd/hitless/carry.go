//go:build linux

package main

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	"github.com/hitless/hitless/internal/config"
	"github.com/hitless/hitless/supervisor"
	"github.com/hitless/hitless/upgrade"
)

// An upgrade in place changes the binary, not the configuration: the new
// image runs with the settings the old one ran with. The command line and
// the environment are the same (package upgrade executes the new image
// with them); the config file is read once, at the first start, and what
// was read then goes across every upgrade in the state's "run" section.
// If the file changed since, the new image says which keys differ: they
// take effect at the next start.

// runState is the "run" section of the upgrade state.
type runState struct {
	Config string `json:"config,omitempty"` // the --config path
	Data   []byte `json:"data,omitempty"`   // what was read from it at the first start
}

// settingsCarrier puts the settings in the state (supervisor.Carrier).
type settingsCarrier struct{ st runState }

func (c settingsCarrier) Handoff(ctx context.Context, st *upgrade.State) error {
	return st.Put("run", c.st)
}

func (settingsCarrier) Resume() {}

// takeSettings has r parse the config file as it was read at the first
// start, which st carries; a state from a build that did not carry it
// leaves r to read the file.
func (r *runFlags) takeSettings(st *upgrade.State) error {
	if _, ok := st.Sections["run"]; !ok {
		return nil
	}
	var rs runState
	if err := st.Get("run", &rs); err != nil {
		return err
	}
	if rs.Config == r.config {
		r.configData = rs.Data
	}
	return nil
}

// settingsNote compares the config file now with what the settings came
// from, and says which keys differ, for the upgrade's verdict and the log;
// "" when nothing does.
func (r *runFlags) settingsNote(log *slog.Logger) string {
	if r.config == "" {
		return ""
	}
	now, err := config.Read(r.config)
	var keys []string
	if err == nil {
		keys, err = config.Changed(r.configData, now)
	}
	switch {
	case err != nil:
		log.Warn("upgrade: the config file cannot be read now; the settings hitless started with go on", "config", r.config, "err", err)
		return fmt.Sprintf("the config file %s cannot be read now (%v); the settings hitless started with go on", r.config, err)
	case len(keys) > 0:
		log.Warn("upgrade: the config file changed since hitless started; these keys take effect at the next start", "config", r.config, "keys", strings.Join(keys, " "))
		return fmt.Sprintf("%s changed since hitless started: %s take effect at the next start (an upgrade keeps the settings)", r.config, strings.Join(keys, ", "))
	}
	return ""
}

// carryAcross has sup carry what "hitless run" carries across an upgrade
// besides the supervisor and the control socket: the settings, and the
// metrics (the listener, and the histograms' values).
func (p *prepared) carryAcross(sup *supervisor.Supervisor, r *runFlags) {
	sup.AddCarrier(settingsCarrier{runState{Config: r.config, Data: r.configData}})
	if p.mtr != nil {
		sup.AddCarrier(p.mtr)
	}
}
