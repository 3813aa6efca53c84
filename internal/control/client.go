//go:build linux

package control

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/hitless/hitless/supervisor"
)

// dialTimeout bounds connect(2), which on a unix socket only waits when
// the accept queue is full.
const dialTimeout = 5 * time.Second

// replyGrace is how much longer than the request's timeout the client
// waits for the reply the server sends when that timeout passes.
const replyGrace = 5 * time.Second

// maxReply bounds a reply line.
const maxReply = 1 << 20

// UnreachableError says that the client could not talk to hitless at
// all: no socket, nothing listening, no permission, or the connection
// broke before a reply.
type UnreachableError struct {
	Path string
	Err  error
}

func (e *UnreachableError) Error() string {
	hint := ""
	switch {
	case errors.Is(e.Err, os.ErrNotExist):
		hint = " (is hitless running? give the same --control, or --name, as to hitless run)"
	case errors.Is(e.Err, syscall.ECONNREFUSED):
		hint = " (nothing listens there: hitless is not running, or has exited)"
	case errors.Is(e.Err, os.ErrPermission):
		hint = " (only root and the user hitless runs as may use its control socket)"
	}
	return fmt.Sprintf("cannot reach hitless at %s: %v%s", e.Path, e.Err, hint)
}

func (e *UnreachableError) Unwrap() error { return e.Err }

// RemoteError is a refusal or failure reported by the server, other than a
// failed reload.
type RemoteError struct {
	Code string
	Msg  string
}

func (e *RemoteError) Error() string { return e.Msg }

// ErrNoVerdict is wrapped by the error of a reload or stop whose outcome
// did not come within the timeout: it may still come.
var ErrNoVerdict = errors.New("no verdict within the timeout")

// noVerdict is the server's timeout reply; it says so itself.
type noVerdict struct{ msg string }

func (e *noVerdict) Error() string        { return e.msg }
func (e *noVerdict) Is(target error) bool { return target == ErrNoVerdict }

// ReloadFailed is the error of a reload whose new generation did not take
// over; the generation that served before keeps serving.
type ReloadFailed struct {
	Result ReloadResult
	Msg    string
}

func (e *ReloadFailed) Error() string { return e.Msg }

// UpgradeFailed is the error of an upgrade that was refused, failed or
// rolled back; the hitless that ran before runs on, with everything.
type UpgradeFailed struct {
	Result UpgradeReply
	Msg    string
}

func (e *UpgradeFailed) Error() string { return e.Msg }

// Client talks to one control socket. It makes one connection per
// request.
type Client struct {
	path string
	conn *net.UnixConn // from Dial, for the first request
}

// Dial connects to the control socket at path, so that a missing socket
// or a permission problem shows at once as an *UnreachableError. The
// connection serves the first request; later ones connect anew.
func Dial(path string) (*Client, error) {
	if err := CheckPath(path); err != nil {
		return nil, err
	}
	c, err := dial(path)
	if err != nil {
		return nil, err
	}
	return &Client{path: path, conn: c}, nil
}

func dial(path string) (*net.UnixConn, error) {
	c, err := net.DialTimeout("unix", path, dialTimeout)
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) {
			err = op.Err // "dial unix PATH: " is said by UnreachableError
		}
		return nil, &UnreachableError{Path: path, Err: err}
	}
	return c.(*net.UnixConn), nil
}

// Close releases a connection that no request used.
func (c *Client) Close() error {
	if c.conn != nil {
		err := c.conn.Close()
		c.conn = nil
		return err
	}
	return nil
}

// Path returns the socket's path.
func (c *Client) Path() string { return c.path }

// Reload asks for a reload and waits for its verdict, at most timeout (0:
// the server's default). It returns the new generation once it serves;
// *ReloadFailed if it did not take over; an error wrapping ErrNoVerdict if
// the timeout (or ctx) ran out first, in which case the reload goes on.
func (c *Client) Reload(ctx context.Context, timeout time.Duration) (*ReloadResult, error) {
	r, err := c.do(ctx, CmdReload, timeout)
	if err != nil {
		return nil, err
	}
	if r.Reload == nil {
		r.Reload = &ReloadResult{}
	}
	if r.Code == CodeReloadFailed {
		return r.Reload, &ReloadFailed{Result: *r.Reload, Msg: r.Error}
	}
	return r.Reload, nil
}

// Status returns a snapshot of hitless's generations and counters.
func (c *Client) Status(ctx context.Context) (supervisor.Status, error) {
	r, err := c.do(ctx, CmdStatus, 0)
	if err != nil {
		return supervisor.Status{}, err
	}
	if r.Status == nil {
		return supervisor.Status{}, &RemoteError{Code: CodeInternal, Msg: "status reply without a status"}
	}
	return *r.Status, nil
}

// Stop asks hitless to drain its children and exit, and waits until it
// has, at most timeout (0: the server's default).
func (c *Client) Stop(ctx context.Context, timeout time.Duration) error {
	_, err := c.do(ctx, CmdStop, timeout)
	return err
}

// Promote ends the trial of the generation on trial with success: it
// serves, and the one before it drains. It returns the generation that
// serves then (nil if hitless could not say), and a *RemoteError with
// Code CodeNoTrial when no generation is on trial.
func (c *Client) Promote(ctx context.Context, timeout time.Duration) (*GenRef, error) {
	return c.endTrial(ctx, CmdPromote, timeout)
}

// Rollback ends the trial of the generation on trial with a rollback: it
// drains, and the generation that served before it goes on; the reload
// that started it fails. It returns the generation that serves then, and
// a *RemoteError with Code CodeNoTrial when no generation is on trial.
func (c *Client) Rollback(ctx context.Context, timeout time.Duration) (*GenRef, error) {
	return c.endTrial(ctx, CmdRollback, timeout)
}

// endTrial sends cmd, CmdPromote or CmdRollback, and returns the
// generation that serves then.
func (c *Client) endTrial(ctx context.Context, cmd string, timeout time.Duration) (*GenRef, error) {
	r, err := c.do(ctx, cmd, timeout)
	if err != nil {
		return nil, err
	}
	return r.Serving, nil
}

// do sends one request and reads its reply. A reply with ok false is
// returned as an error, except a failed reload, returned with its reply.
func (c *Client) do(ctx context.Context, cmd string, timeout time.Duration) (*Reply, error) {
	return c.request(ctx, Request{Cmd: cmd}, timeout)
}

// Upgrade asks hitless to replace its binary in place with binary ("" for
// the path it was started from) and waits for the verdict, which the new
// image gives on the same connection: the listening socket and the
// connection are carried across the exec. It returns *UpgradeFailed when
// the upgrade was refused, failed or rolled back.
func (c *Client) Upgrade(ctx context.Context, binary string, timeout time.Duration) (*UpgradeReply, error) {
	r, err := c.request(ctx, Request{Cmd: CmdUpgrade, Binary: binary}, timeout)
	if err != nil {
		return nil, err
	}
	if r.Upgrade == nil {
		r.Upgrade = &UpgradeReply{}
	}
	if !r.OK {
		return r.Upgrade, &UpgradeFailed{Result: *r.Upgrade, Msg: r.Error}
	}
	return r.Upgrade, nil
}

func (c *Client) request(ctx context.Context, req Request, timeout time.Duration) (*Reply, error) {
	cmd := req.Cmd
	conn := c.conn
	c.conn = nil
	if conn == nil {
		var err error
		if conn, err = dial(c.path); err != nil {
			return nil, err
		}
	}
	defer conn.Close()
	// The server answers when timeout passes; wait a little longer for
	// that answer, and give up at ctx's deadline or cancellation.
	deadline := time.Now().Add(waitFor(cmd, timeout) + replyGrace)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	conn.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	if timeout > 0 {
		req.Timeout = timeout.String()
	}
	b, _ := json.Marshal(req)
	// A write error is not final: the server may have refused the
	// connection with a reply that is waiting to be read.
	_, werr := conn.Write(append(b, '\n'))
	br := bufio.NewReaderSize(conn, 4096)
	line, rerr := readReply(br)
	if rerr != nil {
		return nil, c.noReply(cmd, werr, rerr)
	}
	return c.reply(line)
}

// noReply is the error of a request whose reply could not be read (rerr),
// after its write failed (werr) or not.
func (c *Client) noReply(cmd string, werr, rerr error) error {
	if errors.Is(rerr, os.ErrDeadlineExceeded) {
		if cmd == CmdStatus {
			return fmt.Errorf("%s: no reply from hitless at %s in time", cmd, c.path)
		}
		return fmt.Errorf("%s: %w: no reply from hitless at %s; it may still come (hitless status will tell)", cmd, ErrNoVerdict, c.path)
	}
	if werr != nil {
		rerr = werr
	}
	return &UnreachableError{Path: c.path, Err: fmt.Errorf("connection lost before a reply: %w", rerr)}
}

// reply reads a reply line: the Reply of a command that ran (a failed
// reload or upgrade included), or the error that says why it did not.
func (c *Client) reply(line []byte) (*Reply, error) {
	var r Reply
	if err := json.Unmarshal(line, &r); err != nil {
		return nil, &RemoteError{Code: CodeInternal, Msg: fmt.Sprintf("malformed reply from %s: %v", c.path, err)}
	}
	switch {
	case r.OK || r.Code == CodeReloadFailed || r.Code == CodeUpgradeFailed:
		return &r, nil
	case r.Code == CodeTimeout:
		return nil, &noVerdict{r.Error}
	case r.Code == CodeNotAuthorized:
		return nil, &UnreachableError{Path: c.path, Err: fmt.Errorf("%s: %w", r.Error, os.ErrPermission)}
	}
	code := r.Code
	if code == "" {
		code = CodeInternal
	}
	return nil, &RemoteError{Code: code, Msg: r.Error}
}

func readReply(br *bufio.Reader) ([]byte, error) {
	var line []byte
	for {
		chunk, err := br.ReadSlice('\n')
		line = append(line, chunk...)
		if len(line) > maxReply {
			return nil, fmt.Errorf("reply longer than %d bytes", maxReply)
		}
		if err == nil {
			return line, nil
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			if errors.Is(err, io.EOF) && len(line) > 0 && json.Valid(line) {
				return line, nil // a reply without its newline
			}
			return nil, err
		}
	}
}
