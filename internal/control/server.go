//go:build linux

package control

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hitless/hitless/internal/unixsock"
	"github.com/hitless/hitless/supervisor"
)

// Handler carries out the commands; *supervisor.Supervisor is one.
type Handler interface {
	// NewCaller names a reload request before it is asked, and ReloadAs
	// asks it: a request cut off by a hand-over is carried with its name,
	// and RejoinReload answers it in the next image with the verdict of
	// its own reload (see supervisor.Supervisor.RejoinReload).
	NewCaller() supervisor.Caller
	ReloadAs(ctx context.Context, c supervisor.Caller) error
	RejoinReload(ctx context.Context, c supervisor.Caller) error
	Status(ctx context.Context) (supervisor.Status, error)
	Stop(ctx context.Context) error
	// Promote and Rollback end the trial in progress; they return
	// supervisor.ErrNoTrial when no generation is on trial.
	Promote(ctx context.Context) error
	Rollback(ctx context.Context) error
	// Upgrade replaces hitless's binary in place; on success the process
	// is replaced and the request is carried to the next image (see
	// Handoff), where UpgradeResult gives the verdict.
	Upgrade(ctx context.Context, binary string) error
	UpgradeResult(ctx context.Context) error
}

// Server defaults.
const (
	// MaxConns is how many connections are read and answered at once,
	// not counting those that wait for a reload or an upgrade.
	MaxConns = 32
	// MaxWaiting is how many reload and upgrade requests wait for their
	// verdict at once. They have places of their own, so that however
	// many wait, status, stop, promote and rollback are answered.
	MaxWaiting = 32
	// DefaultReadTimeout bounds the wait for a complete request line.
	DefaultReadTimeout = 5 * time.Second
	// DefaultWait bounds a reload or stop whose request has no timeout.
	DefaultWait = time.Hour
	// quickWait bounds a request without a timeout whose answer does
	// not wait for a child: status, promote, rollback.
	quickWait    = 10 * time.Second
	upgradeWait  = 2 * time.Minute
	writeTimeout = 5 * time.Second
)

// Server is a listening control socket. Set its exported fields before
// calling Serve.
type Server struct {
	// Log receives a record for each request and each refused
	// connection; nil discards them.
	Log *slog.Logger
	// ReadTimeout bounds the wait for a complete request line; zero means
	// DefaultReadTimeout.
	ReadTimeout time.Duration

	path     string
	ln       *net.UnixListener
	dev, ino uint64 // of the socket file we created
	uid      int    // who may connect besides root

	ctx      context.Context // cancelled by Close
	cancel   context.CancelFunc
	released chan struct{}  // closed by Close once the socket file is gone
	sem      chan struct{}  // places of MaxConns
	waitSem  chan struct{}  // places of MaxWaiting
	wg       sync.WaitGroup // connections being served

	// Handing the server over to the next image (handoff.go).
	mu         sync.Mutex
	h          Handler
	reqCtx     context.Context // the requests' parent: cancelled by Handoff
	reqCancel  context.CancelCauseFunc
	conns      map[*net.UnixConn]bool // being served
	handingOff bool
	serveDone  chan struct{} // closed when Serve has returned
	carried    []carried     // handed to, or from, another image
	closing    bool          // Close began: what is carried is Close's to answer

	closeOnce sync.Once
	closeErr  error
}

// Listen creates the control socket at path, mode 0600, and its parent
// directory (mode 0700) if missing. It removes a stale socket file left by
// a process that is gone, and refuses a live one, a file that is not a
// socket, and a directory that someone other than root or this user
// controls.
func Listen(path string) (*Server, error) {
	if err := CheckPath(path); err != nil {
		return nil, err
	}
	path = filepath.Clean(path)
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("control socket %s: create its directory: %w", path, err)
	}
	if err := checkDir(dir); err != nil {
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	if err := unixsock.RemoveStale(path); err != nil {
		// A second hitless for the same service, or a file in the way.
		return nil, fmt.Errorf("control socket: %w; give this hitless another --name or --control", err)
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("control socket %s: %w", path, os.NewSyscallError("socket", err))
	}
	// The file that bind creates takes its mode from the socket's inode
	// (less the umask): setting it first means the file is 0600 from the
	// moment it exists, without touching the process-wide umask.
	if err := unix.Fchmod(fd, 0o600); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("control socket %s: %w", path, os.NewSyscallError("fchmod", err))
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		unix.Close(fd)
		if errors.Is(err, unix.EADDRINUSE) {
			return nil, fmt.Errorf("control socket %s: created by someone else just now: %w", path, err)
		}
		return nil, fmt.Errorf("control socket %s: %w", path, os.NewSyscallError("bind", err))
	}
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("control socket %s: %w", path, os.NewSyscallError("lstat", err))
	}
	if st.Mode&0o077 != 0 {
		// A kernel that ignored the mode of the socket's inode: narrow it
		// now. Peer credentials are checked on every connection anyway.
		if err := os.Chmod(path, 0o600); err != nil {
			unix.Close(fd)
			os.Remove(path)
			return nil, fmt.Errorf("control socket %s: %w", path, err)
		}
	}
	if err := unix.Listen(fd, 64); err != nil {
		unix.Close(fd)
		os.Remove(path)
		return nil, fmt.Errorf("control socket %s: %w", path, os.NewSyscallError("listen", err))
	}
	f := os.NewFile(uintptr(fd), path)
	ln, err := net.FileListener(f)
	f.Close() // FileListener holds a duplicate, close-on-exec
	if err != nil {
		os.Remove(path)
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	return newServer(path, ln.(*net.UnixListener), uint64(st.Dev), st.Ino), nil
}

func newServer(path string, ln *net.UnixListener, dev, ino uint64) *Server {
	ln.SetUnlinkOnClose(false) // Close removes the file only if it is still ours
	s := &Server{
		path: path, ln: ln, dev: dev, ino: ino, uid: os.Geteuid(),
		released: make(chan struct{}), sem: make(chan struct{}, MaxConns), waitSem: make(chan struct{}, MaxWaiting),
		conns: make(map[*net.UnixConn]bool),
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.reqCtx, s.reqCancel = context.WithCancelCause(s.ctx)
	return s
}

// Path returns the socket's path.
func (s *Server) Path() string { return s.path }

// checkDir refuses a directory where someone else could replace our
// socket: owned by another user than root and us, or writable by others
// without the sticky bit.
func checkDir(dir string) error {
	// Lstat, not Stat: a symbolic link would make the checks below judge
	// the directory it points to, which its owner can point elsewhere.
	var st unix.Stat_t
	if err := unix.Lstat(dir, &st); err != nil {
		return os.NewSyscallError("lstat "+dir, err)
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
	case unix.S_IFLNK:
		return fmt.Errorf("%s is a symbolic link: whoever can change it could move the socket; choose another --control", dir)
	default:
		return fmt.Errorf("%s is not a directory", dir)
	}
	if uid := int(st.Uid); uid != 0 && uid != os.Geteuid() {
		return fmt.Errorf("directory %s belongs to uid %d, not to root or to this user (uid %d): whoever owns it could replace the socket; choose another --control", dir, uid, os.Geteuid())
	}
	if st.Mode&0o002 != 0 && st.Mode&unix.S_ISVTX == 0 {
		return fmt.Errorf("directory %s is writable by everyone and not sticky: anyone could replace the socket; choose another --control", dir)
	}
	return nil
}

// Serve answers connections with h until Close is called, and then
// returns nil. Each connection runs in its own goroutine.
func (s *Server) Serve(h Handler) error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return nil // Close answers what was carried
	}
	s.h, s.serveDone = h, make(chan struct{})
	done, carried := s.serveDone, s.carried
	s.carried = nil
	// Counted under s.mu, so that Close, which waits for them after it
	// set closing, cannot miss them.
	s.wg.Add(len(carried))
	s.mu.Unlock()
	defer close(done)
	// Requests carried from another image (an upgrade, or one that
	// failed) are answered first.
	for _, cr := range carried {
		go func() {
			defer s.wg.Done()
			s.resumeConn(cr, h)
		}()
	}
	var delay time.Duration
	for {
		c, err := s.ln.AcceptUnix()
		if err != nil {
			// Only Close closes the listener, and it cancels s.ctx only
			// after: the closed listener is the first sign of it.
			if errors.Is(err, net.ErrClosed) || s.ctx.Err() != nil || s.handingOffNow() {
				return nil
			}
			// Out of descriptors and the like: wait and retry, as
			// net/http does, rather than give up the socket.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			s.logger().Warn("control socket: accept", "err", err, "retry_in", delay)
			select {
			case <-time.After(delay):
			case <-s.ctx.Done():
				return nil
			}
			continue
		}
		delay = 0
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.serveConn(c, h)
		}()
	}
}

// Close stops accepting and removes the socket file if it is still the
// one Listen created; then it answers the stop requests that were waiting
// for it, cancels the other requests in flight (a reload in flight runs to
// its end regardless; only the wait for it ends), and waits for their
// handlers to return.
//
// A stop is answered here, not when the Handler's Stop returns, so that a
// client that sees "stopped" finds the socket gone: call Close last, once
// everything else the process holds is released (the supervisor's Run has
// returned, the pid file is removed), right before the process exits. A
// deploy script's "hitless stop && hitless run" then never meets a live
// socket.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closing = true
		s.mu.Unlock()
		s.closeErr = s.ln.Close()
		var st unix.Stat_t
		if unix.Lstat(s.path, &st) == nil && uint64(st.Dev) == s.dev && st.Ino == s.ino {
			os.Remove(s.path)
		}
		close(s.released)
		s.cancel()
		s.wg.Wait()
		s.mu.Lock()
		carried := s.carried
		s.carried = nil
		s.mu.Unlock()
		// Carried in, and Close came before Serve could answer them (a
		// stop right after an upgrade): each still gets its answer.
		var wg sync.WaitGroup
		for _, cr := range carried {
			wg.Go(func() { s.answerStopping(cr) })
		}
		wg.Wait()
	})
	return s.closeErr
}

// answerStopping answers a carried request that Serve never saw, at
// Close: a stop is done, anything else meets a hitless that is stopping.
// A request half read by the earlier image is read to its end first, for
// a unix socket closed with unread data resets, and its reply is lost.
func (s *Server) answerStopping(cr carried) {
	defer cr.conn.Close()
	cmd := cr.req.cmd
	if cr.deadline.IsZero() {
		line, err := s.readMore(cr.conn, cr.partial, time.Second)
		if err != nil {
			return
		}
		req, err := parseRequest(line)
		if err != nil {
			s.reply(cr.conn, Reply{Code: CodeBadRequest, Error: err.Error()})
			return
		}
		cmd = req.cmd
	}
	if cmd == CmdStop {
		s.reply(cr.conn, Reply{OK: true})
		return
	}
	s.reply(cr.conn, stoppingReply)
}

// stoppingReply answers whatever meets a hitless that is stopping.
var stoppingReply = Reply{Code: CodeStopping, Error: "hitless is stopping"}

func (s *Server) logger() *slog.Logger {
	if s.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Log
}

func (s *Server) serveConn(c *net.UnixConn, h Handler) {
	keep := false
	defer func() {
		if !keep {
			c.Close()
		}
	}()
	log := s.logger()
	cred, err := unixsock.PeerCred(c)
	if err != nil {
		log.Warn("control socket: no peer credentials; connection refused", "err", err)
		s.reply(c, Reply{Code: CodeInternal, Error: "cannot read peer credentials: " + err.Error()})
		return
	}
	log = log.With("peer_pid", cred.Pid, "peer_uid", cred.Uid)
	if err := authorize(cred.Uid, s.uid); err != nil {
		log.Warn("control socket: connection refused", "err", err)
		// Read what the client sent first: closing a unix socket with
		// unread data resets the connection, and the client could lose
		// this reply.
		s.readLine(c, time.Second)
		s.reply(c, Reply{Code: CodeNotAuthorized, Error: err.Error()})
		return
	}
	sl := &slot{s: s}
	if !sl.take(s.sem) {
		log.Warn("control socket: too many connections; refused", "max", MaxConns)
		s.readLine(c, time.Second)
		s.reply(c, Reply{Code: CodeBusy, Error: fmt.Sprintf("hitless is already answering %d control connections; try again", MaxConns)})
		return
	}
	defer sl.release()
	keep = s.serve(carried{conn: c}, log, h, sl)
}

// slot is the place a connection takes while it is read and answered:
// one of MaxConns, which a reload or upgrade request leaves for one of
// MaxWaiting once it is read (see waits).
type slot struct {
	s    *Server
	held chan struct{} // the pool it holds a place in; nil for none
}

func (sl *slot) take(pool chan struct{}) bool {
	select {
	case pool <- struct{}{}:
		sl.held = pool
		return true
	default:
		return false
	}
}

func (sl *slot) release() {
	if sl.held != nil {
		<-sl.held
		sl.held = nil
	}
}

// wait moves a request that waits for its verdict to a place of
// MaxWaiting; false when they are all taken.
func (sl *slot) wait() bool {
	held := sl.held
	if !sl.take(sl.s.waitSem) {
		return false
	}
	if held != nil {
		<-held
	}
	return true
}

// waits reports whether cmd waits for an outcome that may take minutes.
func waits(cmd string) bool { return cmd == CmdReload || cmd == CmdUpgrade }

// serve reads (unless an earlier image did) and answers the request on
// cr.conn, a connection accepted here (in its place sl) or carried from
// another image (nil: it takes none). It returns true when the connection
// stays open, carried.
func (s *Server) serve(cr carried, log *slog.Logger, h Handler, sl *slot) bool {
	if !s.track(cr.conn) {
		return s.carry(cr) // arrived as the server is handed over
	}
	defer s.untrack(cr.conn)
	if cr.deadline.IsZero() {
		return s.readAndAnswer(cr.conn, cr.partial, log, h, sl)
	}
	return s.answer(cr.conn, cr.req, cr.deadline, h)
}

// readAndAnswer reads the request on c, of which partial was read already
// (by an earlier image, for a carried connection), and answers it. A bad
// request gets a bad_request reply; a read cut off by a hand-over is
// carried to the next image with what was read of it. It returns true
// when c stays open, carried.
func (s *Server) readAndAnswer(c *net.UnixConn, partial []byte, log *slog.Logger, h Handler, sl *slot) bool {
	rt := s.ReadTimeout
	if rt <= 0 {
		rt = DefaultReadTimeout
	}
	line, err := s.readMore(c, partial, rt)
	if err != nil && s.handingOffNow() {
		// Cut off by the hand-over: the next image reads the rest.
		return s.carry(carried{conn: c, partial: line})
	}
	var req request
	if err == nil {
		req, err = parseRequest(line)
	}
	if err != nil {
		log.Warn("control socket: bad request", "err", err)
		s.reply(c, Reply{Code: CodeBadRequest, Error: err.Error()})
		return false
	}
	if sl != nil && waits(req.cmd) && !sl.wait() {
		log.Warn("control socket: too many requests waiting for a verdict; refused", "cmd", req.cmd, "max", MaxWaiting)
		s.reply(c, Reply{Code: CodeBusy, Error: fmt.Sprintf("hitless already has %d reload and upgrade requests waiting for their verdict; try again", MaxWaiting)})
		return false
	}
	level := slog.LevelInfo
	if req.cmd == CmdStatus {
		level = slog.LevelDebug // monitoring may poll it
	}
	log.Log(s.ctx, level, "control request", "cmd", req.cmd, "timeout", req.timeout)
	return s.answer(c, req, time.Now().Add(waitFor(req.cmd, req.timeout)), h)
}

// answer carries out req and replies on c, unless the server is handed
// over meanwhile: then the request is carried to the next image with its
// deadline, c stays open, and answer returns true.
func (s *Server) answer(c *net.UnixConn, req request, deadline time.Time, h Handler) bool {
	if req.cmd == CmdReload && req.caller == 0 {
		req.caller = h.NewCaller() // before it is asked: see Handler
	}
	ctx, cancel := context.WithDeadline(s.requestContext(), deadline)
	defer cancel()
	reply, cut := s.do(ctx, req, h)
	if cut {
		return s.carry(carried{conn: c, req: req, deadline: deadline})
	}
	s.reply(c, reply)
	return false
}

// readLine reads one line of at most MaxRequest bytes, without its
// newline. A client that half-closes after a request without a newline
// is taken at its word.
func (s *Server) readLine(c *net.UnixConn, timeout time.Duration) ([]byte, error) {
	return s.readMore(c, nil, timeout)
}

// readMore goes on reading a line of which buf was read already; on error
// it returns what it read too.
func (s *Server) readMore(c *net.UnixConn, buf []byte, timeout time.Duration) ([]byte, error) {
	if i := bytes.IndexByte(buf, '\n'); i >= 0 {
		return bytes.TrimSuffix(buf[:i], []byte("\r")), nil
	}
	c.SetReadDeadline(time.Now().Add(timeout))
	defer c.SetReadDeadline(time.Time{})
	chunk := make([]byte, 512)
	for {
		n, err := c.Read(chunk)
		if i := bytes.IndexByte(chunk[:n], '\n'); i >= 0 {
			buf = append(buf, chunk[:i]...)
			if len(buf) > MaxRequest {
				return nil, fmt.Errorf("request longer than %d bytes", MaxRequest)
			}
			return bytes.TrimSuffix(buf, []byte("\r")), nil
		}
		buf = append(buf, chunk[:n]...)
		if len(buf) > MaxRequest {
			return nil, fmt.Errorf("request longer than %d bytes", MaxRequest)
		}
		switch {
		case err == nil:
		case errors.Is(err, io.EOF):
			if len(buf) == 0 {
				return nil, errors.New("connection closed before a request was sent")
			}
			return buf, nil
		case errors.Is(err, os.ErrDeadlineExceeded):
			return buf, fmt.Errorf("no complete request line within %v: %s", timeout, example)
		default:
			return buf, err
		}
	}
}

func (s *Server) reply(c *net.UnixConn, r Reply) {
	b, err := json.Marshal(r)
	if err != nil {
		b, _ = json.Marshal(Reply{Code: CodeInternal, Error: "encode reply: " + err.Error()})
	}
	c.SetWriteDeadline(time.Now().Add(writeTimeout))
	c.Write(append(b, '\n'))
}

// do carries out a valid request, within ctx. cut is true when a hand-over
// to the next image cut the command off before its outcome was known: the
// request is carried, and the next image answers it. Once the outcome is
// in, the reply goes out here, whatever the hand-over does to the details
// that complete it (which generation serves): carried, it would be asked
// for a second time.
func (s *Server) do(ctx context.Context, req request, h Handler) (reply Reply, cut bool) {
	switch req.cmd {
	case CmdStatus:
		return s.doStatus(ctx, req, h)
	case CmdStop:
		return s.doStop(ctx, req, h)
	case CmdReload:
		return s.doReload(ctx, req, h)
	case CmdPromote, CmdRollback:
		return s.doEndTrial(ctx, req, h)
	case CmdUpgrade:
		return s.doUpgrade(ctx, req, h)
	}
	return Reply{Code: CodeInternal, Error: "unhandled command " + req.cmd}, false
}

// cutOff reports whether err is a hand-over to the next image cutting the
// command off (see do). Only a wait the hand-over ended is cut off: an
// answer that came as it began (a promote that took effect, a reload's
// verdict) is the request's, and goes out here.
func cutOff(ctx context.Context, err error) bool {
	return errors.Is(err, context.Canceled) && errors.Is(context.Cause(ctx), errHandoff)
}

func (s *Server) doStatus(ctx context.Context, req request, h Handler) (Reply, bool) {
	st, err := h.Status(ctx)
	if cutOff(ctx, err) {
		return Reply{}, true
	}
	if err != nil {
		return s.failure(ctx, err, CmdStatus, waitFor(req.cmd, req.timeout)), false
	}
	return Reply{OK: true, Status: &st}, false
}

func (s *Server) doStop(ctx context.Context, req request, h Handler) (Reply, bool) {
	if err := h.Stop(ctx); err != nil && s.ctx.Err() == nil {
		if cutOff(ctx, err) {
			return Reply{}, true
		}
		return s.failure(ctx, err, CmdStop, waitFor(req.cmd, req.timeout)), false
	}
	// Stopped: the reply waits for Close, which comes once the process
	// has released everything. Close cancels ctx too, after releasing:
	// released wins.
	select {
	case <-s.released:
	case <-ctx.Done():
		select {
		case <-s.released:
		default:
			if cutOff(ctx, ctx.Err()) {
				return Reply{}, true
			}
			return s.failure(ctx, ctx.Err(), CmdStop, waitFor(req.cmd, req.timeout)), false
		}
	}
	return Reply{OK: true}, false
}

func (s *Server) doReload(ctx context.Context, req request, h Handler) (Reply, bool) {
	reload := h.ReloadAs
	if req.resumed {
		reload = h.RejoinReload
	}
	err := reload(ctx, req.caller)
	if cutOff(ctx, err) {
		return Reply{}, true
	}
	res := &ReloadResult{}
	var rerr *supervisor.ReloadError
	if errors.As(err, &rerr) {
		res.Generation, res.PID, res.Reason, res.Stderr, res.RolledBack = rerr.Generation, rerr.PID, rerr.Reason, rerr.Stderr, rerr.RolledBack
	}
	if err == nil || rerr != nil {
		// Which generation serves now: the new one, or the one that
		// keeps serving after a failure.
		res.Serving = s.serving(ctx, h)
		if err == nil && res.Serving != nil {
			res.Generation, res.PID = res.Serving.Generation, res.Serving.PID
		}
	}
	if err == nil {
		return Reply{OK: true, Reload: res}, false
	}
	if rerr != nil {
		return Reply{Code: CodeReloadFailed, Error: err.Error(), Reload: res}, false
	}
	return s.failure(ctx, err, CmdReload, waitFor(req.cmd, req.timeout)), false
}

// doEndTrial promotes or rolls back the generation on trial.
func (s *Server) doEndTrial(ctx context.Context, req request, h Handler) (Reply, bool) {
	end := h.Promote
	if req.cmd == CmdRollback {
		end = h.Rollback
	}
	if err := end(ctx); err != nil {
		if cutOff(ctx, err) {
			return Reply{}, true
		}
		if errors.Is(err, supervisor.ErrNoTrial) {
			return Reply{Code: CodeNoTrial, Error: req.cmd + ": no generation is on trial (a reload has one when hitless runs with --trial)"}, false
		}
		return s.failure(ctx, err, req.cmd, waitFor(req.cmd, req.timeout)), false
	}
	return Reply{OK: true, Serving: s.serving(ctx, h)}, false
}

func (s *Server) doUpgrade(ctx context.Context, req request, h Handler) (Reply, bool) {
	var err error
	if req.resumed {
		err = h.UpgradeResult(ctx)
	} else {
		err = h.Upgrade(ctx, req.binary)
	}
	var uerr *supervisor.UpgradeError
	var busy *supervisor.UpgradeBusyError
	switch {
	case cutOff(ctx, err):
		return Reply{}, true
	case err == nil:
		return Reply{OK: true, Upgrade: s.upgraded(ctx, h)}, false
	case errors.As(err, &uerr):
		return Reply{Code: CodeUpgradeFailed, Error: err.Error(), Upgrade: &UpgradeReply{UpgradeResult: uerr.UpgradeResult}}, false
	case errors.As(err, &busy):
		return Reply{Code: CodeUpgradeBusy, Error: "upgrade: " + err.Error()}, false
	}
	return s.failure(ctx, err, CmdUpgrade, waitFor(req.cmd, req.timeout)), false
}

// status asks h for its status, within quickWait and ctx (the request's:
// a hand-over ends the wait, since the supervisor cannot answer while it
// hands over), to fill in a reply.
func (s *Server) status(ctx context.Context, h Handler) (supervisor.Status, bool) {
	ctx, cancel := context.WithTimeout(ctx, quickWait)
	defer cancel()
	st, err := h.Status(ctx)
	return st, err == nil
}

// upgraded says who runs after a successful upgrade.
func (s *Server) upgraded(ctx context.Context, h Handler) *UpgradeReply {
	r := &UpgradeReply{}
	st, ok := s.status(ctx, h)
	if !ok {
		return r
	}
	if u := st.LastUpgrade; u != nil {
		r.UpgradeResult = *u
	}
	r.PID, r.Running, r.Version, r.Generations = st.PID, st.Binary, st.Version, len(st.Generations)
	return r
}

// waitFor is how long the server waits for the outcome of cmd, asked
// with timeout (zero: none given); the client waits that long too, and a
// little more for the answer.
func waitFor(cmd string, timeout time.Duration) time.Duration {
	if timeout > 0 {
		return timeout
	}
	switch cmd {
	case CmdStatus, CmdPromote, CmdRollback:
		return quickWait
	case CmdUpgrade:
		return upgradeWait
	}
	return DefaultWait
}

// serving names the generation that serves now, if one does and the
// handler can say.
func (s *Server) serving(ctx context.Context, h Handler) *GenRef {
	st, ok := s.status(ctx, h)
	if !ok {
		return nil
	}
	for _, g := range st.Generations {
		if g.State == supervisor.Serving {
			return &GenRef{Generation: g.ID, PID: g.PID}
		}
	}
	return nil
}

// failure turns a handler's error other than a failed reload into a reply.
func (s *Server) failure(ctx context.Context, err error, what string, wait time.Duration) Reply {
	switch {
	case errors.Is(err, supervisor.ErrNoUpgrade):
		return Reply{Code: CodeUpgradeFailed, Error: "hitless was not upgraded"}
	case errors.Is(err, supervisor.ErrStopping), s.ctx.Err() != nil:
		return stoppingReply
	case errors.Is(err, context.DeadlineExceeded) && ctx.Err() != nil:
		msg := fmt.Sprintf("%s: no outcome within %v", what, wait)
		switch what {
		case CmdReload:
			msg = fmt.Sprintf("reload: no verdict within %v; the reload goes on and may still succeed (hitless status will tell)", wait)
		case CmdStop:
			msg = fmt.Sprintf("stop: not stopped within %v; hitless goes on draining its children and exits once they are done or their drain timeout passes", wait)
		}
		return Reply{Code: CodeTimeout, Error: msg}
	}
	return Reply{Code: CodeInternal, Error: what + ": " + err.Error()}
}

// authorize admits root and the user the server runs as.
func authorize(peerUID uint32, self int) error {
	if peerUID == 0 || int(peerUID) == self {
		return nil
	}
	return fmt.Errorf("not authorized: uid %d may not control this hitless (only root and uid %d may)", peerUID, self)
}
