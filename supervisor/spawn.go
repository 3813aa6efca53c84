//go:build linux

package supervisor

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hitless/hitless/internal/sdnotify"
	"github.com/hitless/hitless/supervisor/internal/hidden"
	"github.com/hitless/hitless/supervisor/internal/machine"
)

// spawn starts generation c in a shim (see shimProc): the standby if one
// waits, else one forked now. It starts the goroutines that watch it: one
// reports its exit, one reads its notify socket. It is the real
// osEnv.spawn.
func (s *Supervisor) spawn(c *child) error {
	dir, prog, err := resolve(s.cfg.Dir, s.cfg.Command, s.cfg.Env)
	if err != nil {
		return fmt.Errorf("start: %w", err)
	}
	// Mode 0666 in a directory nobody can list: reachable by the child
	// whichever user it runs as, or becomes; senders are checked by their
	// credentials (see readNotify).
	notifyPath := s.rundir.socket(c.id)
	c.notify, err = sdnotify.Listen(notifyPath, 0o666)
	if err != nil {
		return fmt.Errorf("start: notify socket: %w", err)
	}
	sh, standby, err := s.takeShim()
	if err != nil {
		c.notify.Close()
		return fmt.Errorf("start: %w", err)
	}
	// The watcher knows the process before it runs the program: should
	// hitless die in between, the shim reads EOF and runs nothing.
	if err := s.watcher.add(sh.pid); err != nil {
		s.log.Warn("watcher", "err", err)
	}
	if err := sh.begin(hidden.StartMessage(dir, prog, s.cfg.Command, s.childEnv(c, notifyPath)), &s.bg); err != nil {
		s.abandon(sh)
		c.notify.Close()
		return fmt.Errorf("start: %w", err)
	}
	c.pid, c.outs, c.report = sh.pid, sh.outs, sh.report
	c.steps = steps{standby: standby, fork: sh.fork, forked: sh.forked, begun: hidden.Monotonic(), reported: make(chan struct{})}
	go c.steps.readReport(sh.report)
	s.log.Info("started", "generation", c.id, "pid", sh.pid, "program", prog, "dir", dir, "standby", standby)
	s.watch(c, sh.exitc)
	return nil
}

// exited is what the reaper calls when a child an earlier image started
// exits: the exit is counted in flight until the loop has it (see
// quiesce).
func (s *Supervisor) exited(exitc chan<- unix.WaitStatus) func(unix.WaitStatus) {
	return func(ws unix.WaitStatus) {
		s.exiting.Add(1)
		exitc <- ws
	}
}

// stdio returns a child's descriptors 0 to 2, and the pipes hitless
// reads of them, with their write ends (the parent's copies, to close
// once the child has its own). stdout and stderr go through pipes that
// hitless copies to its own where their reader may go away (a pipe, a
// socket: see Output), and where each line gets a prefix: a failure can
// quote the last lines of stderr then. A terminal or a file the child
// gets as it is.
func (s *Supervisor) stdio() (files []uintptr, pipes []outPipe, writeEnds []*os.File, err error) {
	files = []uintptr{0, 0, 0}
	for _, fd := range []int{1, 2} {
		if out := map[int]*Output{1: s.cfg.Outputs.Stdout, 2: s.cfg.Outputs.Stderr}[fd]; out.Direct() && !s.cfg.OutputPrefix {
			files[fd] = uintptr(rawFD(out.File()))
			continue
		}
		r, w, err := os.Pipe()
		if err != nil {
			for i, p := range pipes {
				p.r.Close()
				writeEnds[i].Close()
			}
			return nil, nil, nil, fmt.Errorf("output pipe: %w", err)
		}
		pipes = append(pipes, outPipe{r: r, stderr: fd == 2})
		writeEnds = append(writeEnds, w)
		files[fd] = w.Fd()
	}
	return files, pipes, writeEnds, nil
}

// watch starts the goroutines that follow a running child: one copies
// each output pipe, one reads its notify socket (see follow), one reports
// its exit.
func (s *Supervisor) watch(c *child, exitc <-chan unix.WaitStatus) {
	s.follow(c)
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		ws := <-exitc
		defer s.exiting.Done()
		// Whatever the leader left in its group would hold the sockets
		// and the output pipes. A group that still has members keeps its
		// id, so this cannot hit a reused pid.
		signalGroup(c.pid, syscall.SIGKILL)
		// Report the exit once its output is copied, so the last lines
		// are in the log before the verdict, within a bound in case an
		// escaped descendant keeps the pipe open.
		done := make(chan struct{})
		go func() { c.outw.Wait(); close(done) }()
		select {
		case <-done:
			c.copied = true
		case <-time.After(2 * time.Second):
		}
		s.post(machine.EvExited{Gen: c.id, Exit: exitOf(ws), Stderr: c.stderr.Lines(5)})
	}()
}

// follow starts the goroutines that read what a running child writes:
// a copier for each output pipe and a reader of its notify socket. They
// end when it is closed, or at a read deadline (see quiesce).
func (s *Supervisor) follow(c *child) {
	s.copyOutputs(c)
	s.readers.Add(1)
	go func() {
		defer s.readers.Done()
		s.readNotify(c)
	}()
}

// copyBuffer is the size of each output copier's buffer: a pipe read
// returns what is there, and children write lines.
const copyBuffer = 8 << 10

// copyOutputs starts a copier for each of c's output pipes. A copier ends
// when every writer is gone (and closes its pipe), when the pipe is
// closed, or when a read deadline hands the pipe over to the next image
// (and leaves it open, and the prefixed line in progress, unwritten, in
// the pipe's partial, which the next image goes on from).
func (s *Supervisor) copyOutputs(c *child) {
	for i := range c.outs {
		p := &c.outs[i]
		var dst io.Writer = s.cfg.Outputs.Stdout
		if p.stderr {
			dst = s.cfg.Outputs.Stderr
		}
		var pw *prefixWriter
		if s.cfg.OutputPrefix {
			pw = &prefixWriter{w: dst, prefix: fmt.Appendf(nil, "[gen %d pid %d] ", c.id, c.pid), part: p.partial}
			p.partial = nil
			dst = pw
		}
		if p.stderr {
			dst = io.MultiWriter(dst, c.stderr)
		}
		c.outw.Add(1)
		go func() {
			defer c.outw.Done()
			// Its own small buffer: io.Copy's would be 32 KiB of
			// garbage per generation, most of what a reload allocates.
			// (Hiding the file's WriteTo keeps io.CopyBuffer on it.)
			_, err := io.CopyBuffer(dst, struct{ io.Reader }{p.r}, make([]byte, copyBuffer))
			handedOver := errors.Is(err, os.ErrDeadlineExceeded)
			if pw != nil {
				if handedOver {
					p.partial = pw.part // read once the copier is done
				} else {
					pw.flush()
				}
			}
			if !handedOver {
				p.r.Close()
			}
		}()
	}
}

// readNotify reads the generation's private notify socket until it is
// closed. Only the child and its descendants are believed; the sender is
// known from SCM_CREDENTIALS, never from the payload.
func (s *Supervisor) readNotify(c *child) {
	readySent := false
	for {
		m, files, err := c.notify.ReadFDs()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || errors.Is(err, os.ErrClosed) || errors.Is(err, os.ErrDeadlineExceeded) {
				return // closed, or handed over to the next image
			}
			s.log.Warn("notify socket: bad message", "generation", c.id, "err", err)
			continue
		}
		if !s.fromTree(c, m) {
			s.log.Warn("notify socket: message from a process outside the child's tree ignored", "generation", c.id, "sender_pid", m.PID, "sender_uid", m.UID)
			closeFiles(files)
			continue
		}
		if s.attachHandOver(c, m, files) {
			continue
		}
		if len(files) > 0 {
			// A child cannot store descriptors with hitless (FDSTORE).
			s.log.Warn("notify socket: descriptors received and closed", "generation", c.id, "descriptors", len(files))
			closeFiles(files)
		}
		c.mu.Lock()
		if v, ok := m.Get("STATUS"); ok {
			c.status = sdnotify.CleanStatus(v)
		}
		if v, _ := m.Get("STOPPING"); v == "1" {
			c.stopping = true
		}
		c.mu.Unlock()
		if v, _ := m.Get("READY"); v == "1" && !readySent && s.cfg.ReadyDelay <= 0 {
			readySent = true
			c.steps.ready = hidden.Monotonic() // read by the loop after EvReady
			// READY=1 comes after the child's execve closed the shim's
			// report pipe: let its reader finish first, so that the
			// generation holds no descriptor of its start once it serves.
			if rep := c.steps.reported; rep != nil {
				select {
				case <-rep:
				case <-time.After(time.Second):
				}
			}
			s.post(machine.EvReady{Gen: c.id})
		}
		if v, ok := m.Get("WATCHDOG_USEC"); ok {
			if us, err := strconv.ParseUint(v, 10, 63); err == nil && us <= uint64(math.MaxInt64/int64(time.Microsecond)) {
				s.post(machine.EvWatchdog{Gen: c.id, Kind: machine.WatchdogInterval, Interval: time.Duration(us) * time.Microsecond})
			} else {
				s.log.Warn("notify socket: bad WATCHDOG_USEC", "generation", c.id, "value", v)
			}
		}
		switch v, _ := m.Get("WATCHDOG"); v {
		case "1":
			s.post(machine.EvWatchdog{Gen: c.id, Kind: machine.WatchdogPing})
		case "trigger":
			s.post(machine.EvWatchdog{Gen: c.id, Kind: machine.WatchdogTrigger})
		}
	}
}

// childEnv is hitless's environment less what belongs to hitless's own
// supervisor, plus the child's sockets in every supported convention.
func (s *Supervisor) childEnv(c *child, notifyPath string) []string {
	drop := func(kv string) bool {
		k, _, _ := strings.Cut(kv, "=")
		return ReservedEnv(k)
	}
	base := os.Environ()
	if u := s.cfg.User; u != nil {
		base = append(base, u.env()...)
	}
	var env []string
	for _, kv := range append(base, s.cfg.Env...) {
		if !drop(kv) {
			env = append(env, kv)
		}
	}
	var names, starter, einhornFDs []string
	einhorn := 0
	for i, sock := range s.sockets {
		fd := strconv.Itoa(3 + i)
		names = append(names, sock.Spec.Name)
		if sock.Spec.Stream() {
			starter = append(starter, sock.Addr+"="+fd)
			env = append(env, "EINHORN_FD_"+strconv.Itoa(einhorn)+"="+fd)
			einhornFDs = append(einhornFDs, fd)
			einhorn++
		}
	}
	gen := strconv.Itoa(c.id)
	if d := s.cfg.Watchdog; d > 0 {
		// The shim adds WATCHDOG_PID, the child's own pid.
		env = append(env, "WATCHDOG_USEC="+strconv.FormatInt(d.Microseconds(), 10))
	}
	env = append(env,
		"LISTEN_FDS="+strconv.Itoa(len(s.sockets)),
		"LISTEN_FDNAMES="+strings.Join(names, ":"),
		"NOTIFY_SOCKET="+notifyPath,
		"HITLESS_GENERATION="+gen,
		handOverEnv(),
		"SERVER_STARTER_GENERATION="+gen,
	)
	if einhorn > 0 {
		env = append(env,
			"SERVER_STARTER_PORT="+strings.Join(starter, ";"),
			"EINHORN_FD_COUNT="+strconv.Itoa(einhorn),
			"EINHORN_FDS="+strings.Join(einhornFDs, " "),
		)
	}
	return dedupEnv(env)
}

// dedupEnv keeps the last value of each key, as a shell would.
func dedupEnv(env []string) []string {
	idx := make(map[string]int, len(env))
	var out []string
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		if i, ok := idx[k]; ok {
			out[i] = kv
			continue
		}
		idx[k] = len(out)
		out = append(out, kv)
	}
	return out
}

// fromTree decides whether a notification came from the child or one of
// its descendants, from what is known when the datagram is read. A sender
// that still runs must be in the tree. A sender that is gone already (a
// one-shot helper such as systemd-notify or socat, reaped by its parent
// at once) cannot be looked up: it is believed if it ran as a user the
// tree runs as (hitless's, the one hitless runs children as, or the
// child's current one, for a child that dropped privileges itself), since
// only the tree was told the socket's name, which nobody can list.
func (s *Supervisor) fromTree(c *child, m sdnotify.Message) bool {
	in, known := inTree(int(m.PID), c.pid)
	if known {
		return in
	}
	uids := []uint32{uint32(os.Geteuid())}
	if u := s.cfg.User; u != nil {
		uids = append(uids, u.UID)
	}
	uids = append(uids, procUIDs(c.pid)...)
	return slices.Contains(uids, m.UID)
}

// inTree reports whether pid is root, in root's process group, or a
// descendant of root; known is false when pid itself is gone.
func inTree(pid, root int) (in, known bool) {
	for depth := 0; pid > 1 && depth < 64; depth++ {
		if pid == root {
			return true, true
		}
		st, ok := procStat(pid)
		if !ok {
			return false, depth > 0
		}
		if st.pgid == root {
			return true, true
		}
		pid = st.ppid
	}
	return false, true
}

// procUIDs returns the real, effective, saved and filesystem uids of pid,
// from /proc/PID/status; none if it is gone.
func procUIDs(pid int) []uint32 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return nil
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "Uid:"); ok {
			var uids []uint32
			for _, f := range strings.Fields(rest) {
				if n, err := strconv.ParseUint(f, 10, 32); err == nil {
					uids = append(uids, uint32(n))
				}
			}
			return uids
		}
	}
	return nil
}

// procStat reads the parent pid, process group and resident set size
// (in pages) from /proc/PID/stat.
func procStat(pid int) (procInfo, bool) {
	var buf [512]byte
	return readProcStat(pid, buf[:])
}

// readProcStat is procStat reading into buf, which it returns nothing
// of: status walks every process at each request (or scrape), and this
// keeps that walk from making garbage.
func readProcStat(pid int, buf []byte) (st procInfo, ok bool) {
	fd, err := unix.Open("/proc/"+strconv.Itoa(pid)+"/stat", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return st, false
	}
	n, err := unix.Read(fd, buf)
	unix.Close(fd)
	if err != nil || n <= 0 {
		return st, false
	}
	b := buf[:n]
	// The command name may hold spaces and parentheses; fields after the
	// last ')' are plain: state ppid pgrp ... (rss is the 22nd of them).
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return st, false
	}
	var f [22][]byte
	nf := 0
	for rest := b[i+1:]; nf < len(f); {
		rest = bytes.TrimLeft(rest, " \n")
		if len(rest) == 0 {
			return st, false
		}
		end := bytes.IndexAny(rest, " \n")
		if end < 0 {
			end = len(rest)
		}
		f[nf], rest = rest[:end], rest[end:]
		nf++
	}
	var ok1, ok2, ok3 bool
	st.ppid, ok1 = atoiBytes(f[1])
	st.pgid, ok2 = atoiBytes(f[2])
	rss, ok3 := atoiBytes(f[21])
	st.rssPages = int64(rss)
	return st, ok1 && ok2 && ok3
}

// atoiBytes parses a non-negative decimal number without allocating.
func atoiBytes(b []byte) (int, bool) {
	if len(b) == 0 || len(b) > 18 {
		return 0, false
	}
	n := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}

type procInfo struct {
	ppid, pgid int
	rssPages   int64
}

// groupsRSS adds up the resident memory of every process in each of the
// process groups pgids: what a generation costs while it overlaps
// another. One walk of /proc serves every group.
func groupsRSS(pgids []int) map[int]int64 {
	rss := make(map[int]int64, len(pgids))
	for _, pgid := range pgids {
		rss[pgid] = 0
	}
	if len(pgids) == 0 {
		return rss
	}
	dir, err := os.Open("/proc")
	if err != nil {
		return rss
	}
	defer dir.Close()
	page := int64(os.Getpagesize())
	var buf [512]byte
	for {
		names, err := dir.Readdirnames(256)
		for _, name := range names {
			pid, ok := atoiBytes([]byte(name))
			if !ok {
				continue
			}
			if st, ok := readProcStat(pid, buf[:]); ok {
				if _, want := rss[st.pgid]; want {
					rss[st.pgid] += st.rssPages * page
				}
			}
		}
		if err != nil {
			return rss
		}
	}
}

// closeOnExecFrom sets FD_CLOEXEC on every descriptor from lowfd up.
func closeOnExecFrom(lowfd int) error {
	err := unix.CloseRange(uint(lowfd), ^uint(0), unix.CLOSE_RANGE_CLOEXEC)
	if err == nil {
		return nil
	}
	// Before Linux 5.11: walk /proc/self/fd.
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return err
	}
	for _, e := range ents {
		if fd, err := strconv.Atoi(e.Name()); err == nil && fd >= lowfd {
			unix.CloseOnExec(fd)
		}
	}
	return nil
}

func closeFiles(files []*os.File) {
	for _, f := range files {
		f.Close()
	}
}
