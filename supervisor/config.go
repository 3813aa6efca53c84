//go:build linux

package supervisor

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/hitless/hitless/internal/handover"
	"github.com/hitless/hitless/supervisor/sockets"
	"github.com/hitless/hitless/upgrade"
)

// Defaults for the zero values of Config.
const (
	DefaultReadyTimeout = 60 * time.Second
	DefaultDrainSignal  = syscall.SIGTERM
	DefaultDrainTimeout = 30 * time.Second
	DefaultBackoffMin   = 100 * time.Millisecond
	DefaultBackoffMax   = 30 * time.Second
	DefaultStableAfter  = 10 * time.Second
	// DefaultWatchdogGrace is how long a child has to exit after the
	// watchdog's SIGABRT before its process group gets SIGKILL: time for
	// a Go program to print every goroutine's stack.
	DefaultWatchdogGrace = 5 * time.Second
	// MinWatchdog is the shortest Watchdog: a child proves it is alive
	// at half its interval (childproc does), and below this a busy
	// machine's scheduling delays and a garbage collector's pauses alone
	// would abort healthy children. WATCHDOG_USEC counts microseconds, so
	// anything shorter than one would tell the child "no watchdog" while
	// hitless enforces one.
	MinWatchdog = 100 * time.Millisecond
)

// Config says what to run and how. The zero value of every field but
// Listen and Command means its default.
type Config struct {
	// Listen are the sockets, in the order the child gets them. Empty
	// means every socket systemd passed (Passed), in its order.
	Listen  []sockets.ListenSpec
	Command []string // the program and its arguments
	Dir     string   // the child's working directory, resolved at each start
	Env     []string // KEY=VALUE added to the child's environment
	// User, if set, runs every child as that user (see LookupUser), with
	// USER, LOGNAME, HOME and SHELL set for it unless Env sets them.
	// hitless itself must then run as root.
	User *User

	// ReadyDelay, if positive, declares a child ready once it has lived
	// this long, for programs that cannot send READY=1. It is the weaker
	// choice: a slow or half-started child gets traffic anyway.
	ReadyDelay   time.Duration
	ReadyTimeout time.Duration
	DrainSignal  syscall.Signal // default SIGTERM
	DrainTimeout time.Duration

	// A serving child that dies is restarted after BackoffMin, doubling
	// up to BackoffMax; a child that served StableAfter resets it.
	BackoffMin, BackoffMax, StableAfter time.Duration

	// Trial, if positive, is how long a reloaded generation serves beside
	// the old one before the old one is told to drain. If the new one
	// exits, misses its watchdog, sends WATCHDOG=trigger, or is rolled
	// back (Rollback) meanwhile, it is drained and the old one, never
	// signalled, goes on serving.
	Trial time.Duration
	// Watchdog, if positive, gives every child WATCHDOG_USEC and
	// WATCHDOG_PID, as systemd's WatchdogSec= does: once ready, it must
	// send WATCHDOG=1 at least this often (the child may change its own
	// interval with WATCHDOG_USEC=). A serving child that misses it gets
	// SIGABRT, then SIGKILL of its group after WatchdogGrace, and is
	// restarted like a crash. At least MinWatchdog.
	Watchdog      time.Duration
	WatchdogGrace time.Duration

	// Observer, if set, receives measurements as they happen (for
	// metrics).
	Observer Observer

	// Idle, if set, is called on Run's goroutine once nothing has
	// happened for IdleAfter since something did (a reload, a request, a
	// child's output or exit): hitless gives back to the system there
	// the memory that the work freed, so that what it holds at rest does
	// not depend on how many reloads it has run.
	Idle func()

	// OutputPrefix puts "[gen N pid P] " before each line the child
	// writes to stdout and stderr.
	OutputPrefix bool
	Stdout       *os.File // default os.Stdout
	Stderr       *os.File // default os.Stderr
	// Outputs are where the children's output and the default logger
	// write: by default, NewOutputs(Stdout, Stderr). Give the program's
	// logger the same Outputs.Stderr, so that one count holds every
	// line dropped.
	Outputs *Outputs

	Logger *slog.Logger

	// Notifier reports to the service manager; nil for none.
	Notifier Notifier

	// Passed is what systemd passed (sockets.PassedFromEnv). New takes
	// it over: it closes the descriptors it does not use at once, and the
	// others with the Supervisor; all of them if it fails.
	Passed sockets.Passed
	// FDStore, if set, is systemd's file descriptor store: Run puts every
	// socket New bound there before the first child starts, and drops the
	// names of passed sockets nobody asked for, so that the sockets, and
	// the connections waiting on them, outlive a crash of hitless.
	FDStore sockets.FDStore

	// NoStandby turns the standby off. By default, once a generation
	// serves, the next generation's process is forked ahead of time and
	// waits, before the execve of its program, until a reload or a
	// restart takes it (see standby.go): a reload then costs the execve
	// of the program, not the start of a Go program as well, for the
	// price of one idle process of about 0.6 MiB.
	NoStandby bool

	// ShimPath is the binary that runs the hidden modes (ShimArg,
	// WatchArg): one that links this package; default /proc/self/exe.
	ShimPath string

	// Self is the running image: set, it lets Upgrade replace hitless's
	// binary in place (see package upgrade). Run must then be called from
	// the main goroutine, locked to the main thread (runtime.LockOSThread
	// in an init function): children are forked, and the exec is made,
	// from it. Carriers are handed over with the supervisor's own state.
	Self     *upgrade.Self
	Carriers []Carrier
	// Version names this build, in the upgrade state.
	Version string

	// HandOverMaxInFlight bounds the connections being handed from a
	// draining generation to the serving one at once (see
	// connhandover.go); 0 means handover.DefaultMaxInFlight (1024).
	HandOverMaxInFlight int
}

// Notifier is how the supervisor speaks to a service manager (systemd's
// sd_notify protocol in the hitless binary). Every method may fail; the
// supervisor logs the error and goes on.
type Notifier interface {
	// Ready says start-up or a reload is over; status says how it went.
	Ready(status string) error
	// Reloading says a reload began.
	Reloading() error
	// Stopping says the stop began.
	Stopping() error
	// Status reports a line of text.
	Status(status string) error
	// Watchdog is the keep-alive ping, sent every WatchdogInterval while
	// a child serves; an interval of 0 sends none.
	Watchdog() error
	WatchdogInterval() time.Duration
}

// Observer receives measurements from the supervisor as they happen. Its
// methods are called from the supervisor's goroutine and must not block.
type Observer interface {
	// ReloadServing: a reload took d from its request (the first, when
	// several joined) to its generation serving, trial included.
	ReloadServing(d time.Duration)
	// Drained: a generation took d from the drain signal to its exit.
	Drained(d time.Duration)
}

// A ConfigError says what is wrong with one field of a Config, named as
// in Go ("DrainTimeout", "Listen[1]", "Env[0]"), so that a caller can say
// where the value came from: a flag, or a line of a file.
type ConfigError struct {
	Field string
	Msg   string
	// Other is the field Field was checked against, for a rule across
	// two ("BackoffMin" for BackoffMax): when Field is a default, the
	// other one is the value given that is wrong.
	Other string
}

func (e *ConfigError) Error() string { return e.Field + ": " + e.Msg }

// withDefaults fills in the zero values.
func (c Config) withDefaults() Config {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.ReadyTimeout, DefaultReadyTimeout)
	def(&c.DrainTimeout, DefaultDrainTimeout)
	def(&c.BackoffMin, DefaultBackoffMin)
	def(&c.BackoffMax, DefaultBackoffMax)
	def(&c.StableAfter, DefaultStableAfter)
	def(&c.WatchdogGrace, DefaultWatchdogGrace)
	if c.DrainSignal == 0 {
		c.DrainSignal = DefaultDrainSignal
	}
	if c.Stdout == nil {
		c.Stdout = os.Stdout
	}
	if c.Stderr == nil {
		c.Stderr = os.Stderr
	}
	if c.Outputs == nil {
		c.Outputs = NewOutputs(c.Stdout, c.Stderr)
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(c.Outputs.Stderr, nil))
	}
	if c.ShimPath == "" {
		c.ShimPath = "/proc/self/exe"
	}
	return c
}

// Validate checks c as New would, zero values standing for their
// defaults, and reports every problem as a *ConfigError, joined. It is
// where the rules live: the hitless command checks flags and the config
// file with it. It is a list, one rule a statement, read top to bottom:
// its complexity is the number of rules.
func (c Config) Validate() error {
	c = c.withDefaults()
	var errs []error
	against := func(field, other, format string, a ...any) {
		errs = append(errs, &ConfigError{Field: field, Msg: fmt.Sprintf(format, a...), Other: other})
	}
	bad := func(field, format string, a ...any) { against(field, "", format, a...) }
	if len(c.Command) == 0 || c.Command[0] == "" {
		bad("Command", "no program to run")
	}
	if len(c.Listen) == 0 && len(c.Passed.FDs) == 0 {
		bad("Listen", "no sockets: give at least one")
	}
	names := make(map[string]int)
	for i, l := range c.Listen {
		if err := sockets.CheckName(l.Name); err != nil {
			bad(fmt.Sprintf("Listen[%d]", i), "%v", err)
		} else if prev, ok := names[l.Name]; ok {
			bad(fmt.Sprintf("Listen[%d]", i), "name %q is already used by %s: give each socket its own name", l.Name, c.Listen[prev])
		} else {
			names[l.Name] = i
		}
	}
	for i, kv := range c.Env {
		if err := CheckEnv(kv); err != nil {
			bad(fmt.Sprintf("Env[%d]", i), "%v", err)
		}
	}
	for _, d := range []struct {
		field string
		v     time.Duration
	}{
		{"ReadyDelay", c.ReadyDelay}, {"ReadyTimeout", c.ReadyTimeout}, {"DrainTimeout", c.DrainTimeout},
		{"BackoffMin", c.BackoffMin}, {"BackoffMax", c.BackoffMax}, {"StableAfter", c.StableAfter},
		{"Trial", c.Trial}, {"Watchdog", c.Watchdog}, {"WatchdogGrace", c.WatchdogGrace},
	} {
		if d.v < 0 {
			bad(d.field, "%v is negative (want a positive duration, or zero for the default)", d.v)
		}
	}
	if c.Watchdog > 0 && c.Watchdog < MinWatchdog {
		bad("Watchdog", "%v is below the minimum of %v: a child pings at half its interval, and scheduling delays alone would abort it (WATCHDOG_USEC counts microseconds)", c.Watchdog, MinWatchdog)
	}
	if c.ReadyDelay >= c.ReadyTimeout {
		// Every start would time out before the child counts as ready.
		against("ReadyDelay", "ReadyTimeout", "%v is not shorter than the ready timeout (%v): no child would ever be ready in time", c.ReadyDelay, c.ReadyTimeout)
	}
	if c.BackoffMin > c.BackoffMax {
		against("BackoffMax", "BackoffMin", "%v is below the minimum backoff (%v)", c.BackoffMax, c.BackoffMin)
	}
	if err := CheckDrainSignal(c.DrainSignal); err != nil {
		bad("DrainSignal", "%v", err)
	}
	if u := c.User; u != nil && os.Geteuid() != 0 && (int(u.UID) != os.Geteuid() || int(u.GID) != os.Getegid()) {
		bad("User", "running children as %s (uid %d) needs hitless to run as root; it runs as uid %d", u.Name, u.UID, os.Geteuid())
	}
	return errors.Join(errs...)
}

// CheckDrainSignal refuses a signal a child cannot catch: it could never
// drain. The hard stop at the drain timeout is hitless's own SIGKILL.
func CheckDrainSignal(sig syscall.Signal) error {
	if sig <= 0 || sig > 64 || sig == syscall.SIGKILL || sig == syscall.SIGSTOP {
		return fmt.Errorf("signal %d cannot be used to drain (want a signal the child can catch, e.g. SIGTERM)", int(sig))
	}
	return nil
}

// validEnvName is what a variable name may look like: what POSIX shells
// accept, which is also what every program can read back.
var validEnvName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// CheckEnv checks one KEY=VALUE entry of Config.Env as Validate does, so
// that a caller can refuse a bad entry where it reads it, with its origin.
func CheckEnv(kv string) error {
	k, _, ok := strings.Cut(kv, "=")
	switch {
	case !ok:
		return fmt.Errorf("%q is not KEY=VALUE", kv)
	case !validEnvName.MatchString(k):
		return fmt.Errorf("%q is not a variable name (want letters, digits and _, not starting with a digit)", k)
	case ReservedEnv(k):
		return fmt.Errorf("hitless sets %s for each child itself; it cannot be configured", k)
	}
	return nil
}

// ReservedEnv reports whether the supervisor sets the variable itself for
// each child (the sockets, readiness, the generation), so that a value
// given in Config.Env would break the hand-over.
func ReservedEnv(name string) bool {
	switch name {
	case "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "HITLESS_GENERATION", handover.EnvVar:
		return true
	}
	return strings.HasPrefix(name, "LISTEN_") ||
		strings.HasPrefix(name, "SERVER_STARTER_") ||
		strings.HasPrefix(name, "EINHORN_")
}
