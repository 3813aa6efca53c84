//go:build linux

package upgrade

import (
	"bytes"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/hitless/hitless/upgrade/internal/earlysig"
)

// Signals are the signals an upgrade carries: those the supervisor
// handles. A program that upgrades itself catches them with
// signal.Notify on one channel, and gives that channel to Exec.
var Signals = earlysig.Signals

// How signals cross the exec. A Go program cannot keep SIGHUP, SIGINT or
// SIGTERM pending across its own start: the runtime unblocks them on every
// thread before any Go code runs, and then a pending one meets its
// disposition, which execve resets to the default (the end of the
// process) unless it was SIG_IGN. So the exec'ing thread
//
//  1. blocks every signal in Signals, and SIGCHLD;
//  2. takes what the kernel holds pending for the process;
//  3. sets SIGHUP, SIGINT and SIGTERM to SIG_IGN, so that the new image
//     cannot die of one before it catches them (the kernel flushes the
//     pending ones, which is why 2 comes first);
//  4. takes what the Go runtime caught before 3 and has not yet delivered
//     to the program's channel, proved complete by marker signals, which
//     the runtime delivers after every signal caught before them: one to
//     this thread, and one to each other thread that is running or
//     runnable (one the kernel made run to handle a signal, or that was
//     preempted while it did), which reaches it only once a handler it
//     runs has returned (the runtime's handlers block every signal); a
//     sleeping thread runs no handler;
//  5. takes what the kernel holds pending again, and executes the new
//     image with what it took (State.Signals).
//
// SIGUSR1 and SIGUSR2 stay blocked across the exec, and pending: the new
// image receives them when it asks for them. Package earlysig, in the new
// image, catches Signals from the first package initialisation on. A
// signal that arrives between 3 and that point is lost if it is SIGHUP,
// SIGINT or SIGTERM (ignored), and a SIGTERM after the runtime set up its
// handlers and before earlysig ends the process; docs/reliability.md has
// the measured window.

// markers are the real-time signals of step 4, one per thread, in
// rounds if there are more threads: nothing else sends them (signals 32
// to 34 are the C library's). Few: each costs the runtime a round trip
// to its signal thread when it is caught and released.
var markers = []os.Signal{syscall.Signal(64), syscall.Signal(63), syscall.Signal(62), syscall.Signal(61)}

// markerWait bounds the wait for the markers, which the runtime delivers
// within microseconds.
const markerWait = time.Second

// ignored are the signals set to SIG_IGN across the exec.
var ignored = []syscall.Signal{syscall.SIGHUP, syscall.SIGINT, syscall.SIGTERM}

// held is the signal state of the exec'ing thread while an exec is
// prepared: what to put back if it fails, and what was taken.
type held struct {
	at     int64          // when the process stopped catching SIGHUP, SIGINT and SIGTERM (CLOCK_MONOTONIC)
	mc     chan os.Signal // the markers', caught before the window
	mask   unix.Sigset_t
	old    [3]kernelSigaction // of ignored, before
	nold   int
	caught []syscall.Signal
}

// holdSignals does steps 1 to 5 on the calling thread: c is the channel
// the program catches Signals on (nil if none). Whatever it returns,
// release puts the thread and the dispositions back.
func holdSignals(c chan os.Signal) (*held, error) {
	// Caught before the window opens: catching a signal costs the
	// runtime a round trip to its signal thread.
	h := &held{mc: make(chan os.Signal, len(markers))}
	if c != nil {
		signal.Notify(h.mc, markers...)
	}
	set := sigset(append([]syscall.Signal{syscall.SIGCHLD}, signalNums()...)...)
	if err := unix.PthreadSigmask(unix.SIG_BLOCK, &set, &h.mask); err != nil {
		signal.Stop(h.mc)
		return nil, err
	}
	pending := takePending()
	h.at = monotonic()
	for _, sig := range ignored {
		if err := ignore(sig, &h.old[h.nold]); err != nil {
			h.release()
			return nil, err
		}
		h.nold++
	}
	if c != nil {
		h.caught = append(h.caught, drainCaught(c, h.mc)...)
	}
	h.caught = append(h.caught, pending...)
	h.caught = append(h.caught, takePending()...)
	return h, nil
}

// release undoes holdSignals, after an exec that failed. The signals it
// took are the caller's to handle.
func (h *held) release() {
	for i := h.nold - 1; i >= 0; i-- {
		setAction(ignored[i], &h.old[i], nil)
	}
	h.nold = 0
	unix.PthreadSigmask(unix.SIG_SETMASK, &h.mask, nil)
	signal.Stop(h.mc)
}

// drainCaught takes what is waiting on c, and what the runtime caught
// and has not delivered yet: it sends a marker to this thread and to each
// other one that may be in a signal handler (which gets its marker once
// the handler returned), and the runtime's signal loop delivers every
// signal caught before a marker ahead of it.
func drainCaught(c, mc chan os.Signal) []syscall.Signal {
	var got []syscall.Signal
	take := func(s os.Signal) {
		if sig, ok := s.(syscall.Signal); ok {
			got = append(got, sig)
		}
	}
	tids := threads()
	timeout := time.NewTimer(markerWait)
	defer timeout.Stop()
	pid := os.Getpid()
	for len(tids) > 0 {
		round := tids[:min(len(tids), len(markers))]
		tids = tids[len(round):]
		waiting := map[os.Signal]bool{}
		for i, tid := range round {
			if unix.Tgkill(pid, tid, markers[i].(syscall.Signal)) == nil {
				waiting[markers[i]] = true
			} // else the thread is gone
		}
		for len(waiting) > 0 {
			select {
			case s := <-c:
				take(s)
			case m := <-mc:
				delete(waiting, m)
			case <-timeout.C:
				tids, waiting = nil, nil
			}
		}
	}
	for {
		select {
		case s := <-c:
			take(s)
		default:
			return got
		}
	}
}

// threads lists this thread, and those of the process that are running
// or runnable: the ones that can be in a signal handler. A thread the
// kernel picks for a signal is made runnable at once, and stays so until
// its handler returns. Waking every thread with a marker would cost
// milliseconds on a busy machine, all of them in the window in which
// signals are lost.
func threads() []int {
	self := unix.Gettid()
	tids := []int{self}
	ents, _ := os.ReadDir("/proc/self/task")
	for _, e := range ents {
		tid, err := strconv.Atoi(e.Name())
		if err != nil || tid == self {
			continue
		}
		if b, err := os.ReadFile("/proc/self/task/" + e.Name() + "/stat"); err == nil {
			// "tid (comm) S ...": the state follows the last ')'.
			if i := bytes.LastIndexByte(b, ')'); i >= 0 && i+2 < len(b) && b[i+2] != 'R' {
				continue
			}
		}
		tids = append(tids, tid)
	}
	return tids
}

// takePending takes the signals of Signals the kernel holds pending for
// this thread and the process (they are blocked on this thread), oldest
// first for each signal number.
func takePending() []syscall.Signal {
	set := sigset(signalNums()...)
	var got []syscall.Signal
	var zero unix.Timespec
	for range 64 {
		r, _, errno := unix.RawSyscall6(unix.SYS_RT_SIGTIMEDWAIT, uintptr(unsafe.Pointer(&set)), 0, uintptr(unsafe.Pointer(&zero)), sigsetSize, 0, 0)
		if errno != 0 {
			if errno == unix.EINTR {
				continue
			}
			break // EAGAIN: nothing more
		}
		got = append(got, syscall.Signal(r))
	}
	return got
}

func signalNums() []syscall.Signal {
	nums := make([]syscall.Signal, 0, len(Signals))
	for _, s := range Signals {
		nums = append(nums, s.(syscall.Signal))
	}
	return nums
}

func sigset(sigs ...syscall.Signal) unix.Sigset_t {
	var set unix.Sigset_t
	for _, sig := range sigs {
		set.Val[(sig-1)/64] |= 1 << ((uint(sig) - 1) % 64)
	}
	return set
}

// kernelSigaction holds the kernel's struct sigaction, whose layout varies
// by architecture; it is only copied as a whole (what ignore saves and
// release puts back), and written only as SIG_IGN with no flags and an
// empty mask, whose handler's offset sigactionHandler gives.
type kernelSigaction struct{ raw [8]uintptr }

// ignore sets sig to SIG_IGN with rt_sigaction, saving the action it had
// in old. Not signal.Ignore: that marks the signal unhandled before it
// changes the action, and a signal delivered in between would meet the
// runtime's "not handled, no handler to forward to" path, which kills
// the process.
func ignore(sig syscall.Signal, old *kernelSigaction) error {
	var act kernelSigaction
	*(*uintptr)(unsafe.Add(unsafe.Pointer(&act.raw), sigactionHandler)) = 1 // SIG_IGN
	return setAction(sig, &act, old)
}

func setAction(sig syscall.Signal, act, old *kernelSigaction) error {
	_, _, errno := unix.RawSyscall6(unix.SYS_RT_SIGACTION, uintptr(sig), uintptr(unsafe.Pointer(act)), uintptr(unsafe.Pointer(old)), sigsetSize, 0, 0)
	if errno != 0 {
		return errno
	}
	return nil
}

// signalNames are the carried signals as written in the state: by name.
func signalNames(sigs []syscall.Signal) []string {
	names := make([]string, 0, len(sigs))
	for _, s := range sigs {
		names = append(names, unix.SignalName(s))
	}
	return names
}

// parseSignals reads the carried signals back; names this build does not
// know are skipped.
func parseSignals(names []string) []syscall.Signal {
	var sigs []syscall.Signal
	for _, n := range names {
		if s := unix.SignalNum(n); s != 0 {
			sigs = append(sigs, s)
		}
	}
	return sigs
}

func monotonic() int64 {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano()
}
