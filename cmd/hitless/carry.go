//go:build linux

package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"

	"github.com/spf13/pflag"

	"github.com/hitless/hitless/internal/config"
	"github.com/hitless/hitless/internal/pidfile"
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
//
// A release that did not carry its settings (14f122a: its state has no
// "run" section) leaves the new image only what its state carries: the
// sockets and the control socket. The rest is read from the file again;
// the pid file stays where the old release wrote it (the path the file
// gives now is used only if it holds this pid); and the verdict says so.
// From then on "listen" and "pid_file" are kept keys: the values running
// need not be those of the data carried, and every later verdict names
// them.

// runState is the "run" section of the upgrade state.
type runState struct {
	Config string `json:"config,omitempty"` // the --config path
	Data   []byte `json:"data,omitempty"`   // what was read from it at the first start
	// Kept are the keys whose values running did not come from Data, but
	// from a release that did not carry its settings (keptKeys).
	Kept []string `json:"kept,omitempty"`
}

// keptKeys are what a release that did not carry its settings keeps
// running across the upgrade: the sockets it holds, and the pid file it
// wrote.
var keptKeys = []string{"listen", "pid_file"}

// settingsCarrier puts the settings in the state (supervisor.Carrier).
type settingsCarrier struct{ st runState }

func (c settingsCarrier) Handoff(ctx context.Context, st *upgrade.State) error {
	return st.Put("run", c.st)
}

func (settingsCarrier) Resume() {}

// takeSettings has r parse the config file as it was read at the first
// start, which st carries; a state from a release that did not carry it
// leaves r to read the file, but for the keys it keeps (keptKeys).
func (r *runFlags) takeSettings(st *upgrade.State) error {
	if _, ok := st.Sections["run"]; !ok {
		r.legacy = r.config != ""
		if r.legacy {
			r.kept = keptKeys
		}
		return nil
	}
	var rs runState
	if err := st.Get("run", &rs); err != nil {
		return err
	}
	if rs.Config == r.config {
		r.configData, r.kept = rs.Data, rs.Kept
	}
	return nil
}

// keepsPIDFile reports whether the pid file of the settings is the one
// this process keeps: always, unless it is a kept key (see takeSettings)
// and the file does not hold this pid (the path changed in the config
// file since the release that did not carry it wrote its own).
func (r *runFlags) keepsPIDFile(fs *pflag.FlagSet, path string) bool {
	if !slices.Contains(r.kept, "pid_file") || fs.Changed("pid-file") {
		return true
	}
	pid, err := pidfile.Read(path)
	return err == nil && pid == os.Getpid()
}

// settingsNote compares the config file now with what the settings came
// from, and says which keys differ, for the upgrade's verdict and the log;
// "" when nothing does.
func (r *runFlags) settingsNote(log *slog.Logger) string {
	if r.config == "" {
		return ""
	}
	kept := strings.Join(r.kept, " and ")
	if r.legacy {
		if r.legacyErr != nil {
			log.Warn("upgrade: the previous release did not carry its settings, and the config file cannot be used now; the sockets and the pid file stay as it ran them, the other settings are the command line's and the defaults",
				"config", r.config, "err", r.legacyErr)
			return fmt.Sprintf("the previous release did not carry its settings: %s stay as it ran them; %s cannot be used now (%v): the other settings are the command line's and the defaults",
				kept, r.config, r.legacyErr)
		}
		log.Warn("upgrade: the previous release did not carry its settings; these stay as it ran them, the others were read again from the config file",
			"config", r.config, "kept", strings.Join(r.kept, " "))
		return fmt.Sprintf("the previous release did not carry its settings: %s stay as it ran them (%s's take effect at the next start); the other settings were read again from %s",
			kept, r.config, r.config)
	}
	now, err := config.Read(r.config)
	var keys []string
	if err == nil {
		keys, err = config.Changed(r.configData, now)
	}
	// The kept keys have a note of their own, below.
	keys = slices.DeleteFunc(keys, func(k string) bool { return slices.Contains(r.kept, k) })
	var notes []string
	switch {
	case err != nil:
		log.Warn("upgrade: the config file cannot be read now; the settings hitless started with go on", "config", r.config, "err", err)
		notes = append(notes, fmt.Sprintf("the config file %s cannot be read now (%v); the settings hitless started with go on", r.config, err))
	case len(keys) > 0:
		log.Warn("upgrade: the config file changed since hitless started; these keys take effect at the next start", "config", r.config, "keys", strings.Join(keys, " "))
		notes = append(notes, fmt.Sprintf("%s changed since hitless started: %s take effect at the next start (an upgrade keeps the settings)", r.config, strings.Join(keys, ", ")))
	}
	if len(r.kept) > 0 {
		// Kept from a release that did not carry its settings: what runs
		// need not be what the data carried says.
		notes = append(notes, fmt.Sprintf("%s are still as a release that did not carry its settings ran them (%s's take effect at the next start)", kept, r.config))
	}
	return strings.Join(notes, "; ")
}

// carryAcross has sup carry what "hitless run" carries across an upgrade
// besides the supervisor and the control socket: the settings, and the
// metrics (the listener, and the histograms' values).
func (p *prepared) carryAcross(sup *supervisor.Supervisor, r *runFlags) {
	sup.AddCarrier(settingsCarrier{runState{Config: r.config, Data: r.configData, Kept: r.kept}})
	if p.mtr != nil {
		sup.AddCarrier(p.mtr)
	}
}
