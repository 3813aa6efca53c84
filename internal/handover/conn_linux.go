package handover

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Conn is one end of a generation's channel: a connected SOCK_SEQPACKET
// unix socket. Send and Recv are safe for concurrent use (each record is
// written and read whole).
type Conn struct {
	c *net.UnixConn

	rmu sync.Mutex // Recv's buffers, reused: one record is read at a time
	buf []byte
	oob []byte
}

// oobSize is room for the descriptors of a full batch, and a few more
// that a broken peer might send, which are received to be closed (past
// the room, the kernel drops them itself and flags the truncation).
var oobSize = unix.CmsgSpace(4 * (MaxBatch + 4))

// Pair makes a channel: the Conn this process keeps, and the peer end, as
// a file to send to the other side (and then close). Both are
// close-on-exec.
func Pair() (*Conn, *os.File, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("handover: socketpair: %w", err)
	}
	mine := os.NewFile(uintptr(fds[0]), "handover channel")
	peer := os.NewFile(uintptr(fds[1]), "handover channel (peer end)")
	c, err := FileConn(mine)
	mine.Close()
	if err != nil {
		peer.Close()
		return nil, nil, err
	}
	return c, peer, nil
}

// FileConn makes a Conn of f, which must be a SOCK_SEQPACKET unix socket.
// f is not closed: the Conn holds a duplicate.
func FileConn(f *os.File) (*Conn, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("handover: %w", err)
	}
	var typ int
	var serr error
	rc.Control(func(fd uintptr) { typ, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TYPE) })
	if serr != nil {
		return nil, fmt.Errorf("handover: channel: %w", serr)
	}
	if typ != unix.SOCK_SEQPACKET {
		return nil, fmt.Errorf("handover: channel is a socket of type %d, not SOCK_SEQPACKET", typ)
	}
	nc, err := net.FileConn(f)
	if err != nil {
		return nil, fmt.Errorf("handover: channel: %w", err)
	}
	uc, ok := nc.(*net.UnixConn)
	if !ok {
		nc.Close()
		return nil, fmt.Errorf("handover: channel is a %T, not a unix socket", nc)
	}
	return &Conn{c: uc}, nil
}

// Send writes m, with fds attached (the kernel puts duplicates in the
// record: the caller still owns them): one for a conn record, one per id
// for a conns record, none for the others.
func (c *Conn) Send(m Message, fds ...int) error {
	b, err := Marshal(m)
	if err != nil {
		return err
	}
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	if _, _, err := c.c.WriteMsgUnix(b, oob, nil); err != nil {
		return fmt.Errorf("handover: send %s: %w", m.Type, err)
	}
	return nil
}

// SendConn writes m with the descriptor of sc attached.
func (c *Conn) SendConn(m Message, sc syscall.Conn) error {
	rc, err := sc.SyscallConn()
	if err != nil {
		return fmt.Errorf("handover: send %s: %w", m.Type, err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = c.Send(m, int(fd)) }); err != nil {
		return fmt.Errorf("handover: send %s: %w", m.Type, err)
	}
	return serr
}

// SendConns writes m, a conns record of version 2 or later, with the
// descriptor of each of rcs attached in order: m.IDs[i] names rcs[i].
// Each descriptor is held (RawConn.Control) until the record is queued,
// so that none can be closed and reused under it. A connection already
// closed cannot go: it is left out of the record, with its id, and its
// index in rcs is in skipped; when none is left, nothing is sent.
func (c *Conn) SendConns(m Message, rcs []syscall.RawConn) (skipped []int, err error) {
	if len(m.IDs) != len(rcs) {
		return nil, fmt.Errorf("handover: send %s: %d ids for %d connections", m.Type, len(m.IDs), len(rcs))
	}
	ids := m.IDs
	fds := make([]int, 0, len(rcs))
	sent := make([]uint64, 0, len(rcs))
	// Control holds a descriptor only while its function runs: hold
	// them all by nesting, one level per connection (at most MaxBatch).
	var hold func(i int)
	hold = func(i int) {
		if i == len(rcs) {
			if len(fds) > 0 {
				m.IDs = sent
				err = c.Send(m, fds...)
			}
			return
		}
		held := false
		rcs[i].Control(func(fd uintptr) {
			held = true
			fds = append(fds, int(fd))
			sent = append(sent, ids[i])
			hold(i + 1)
		})
		if !held {
			skipped = append(skipped, i)
			hold(i + 1)
		}
	}
	hold(0)
	return skipped, err
}

// A RecordError is a record that Recv read but could not use (it did not
// decode, or is of a version this build does not read); any descriptor it
// carried was closed. The channel remains usable: keep reading.
type RecordError struct{ Err error }

func (e *RecordError) Error() string { return e.Err.Error() }
func (e *RecordError) Unwrap() error { return e.Err }

// Recv reads the next record. A conn record comes with its descriptor,
// and a conns record with one per id, in order: they are the caller's to
// close (close-on-exec, and in blocking mode or not as the sender's
// socket was: the flag belongs to the socket, shared across processes).
// Descriptors on any other record are closed. At the end of the channel
// (the peer closed its end) it returns io.EOF; a record it cannot use
// yields a *RecordError.
func (c *Conn) Recv() (Message, []int, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	if c.buf == nil {
		c.buf, c.oob = make([]byte, MaxMessage+1), make([]byte, oobSize)
	}
	buf, oob := c.buf, c.oob
	n, oobn, flags, _, err := c.c.ReadMsgUnix(buf, oob)
	if err != nil {
		return Message{}, nil, err
	}
	fds, cerr := rights(oob[:oobn])
	closeAll := func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}
	if flags&unix.MSG_TRUNC != 0 {
		closeAll()
		return Message{}, nil, &RecordError{fmt.Errorf("handover: record larger than %d bytes", MaxMessage)}
	}
	m, err := Unmarshal(buf[:n])
	if err == nil && flags&unix.MSG_CTRUNC != 0 {
		err = errors.New("handover: control data truncated")
	}
	if err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		closeAll()
		return m, nil, &RecordError{err}
	}
	want := 0
	switch m.Type {
	case TypeConn:
		want = 1
	case TypeConns:
		want = len(m.IDs)
	default:
		closeAll()
		return m, nil, nil
	}
	if len(fds) != want {
		closeAll()
		return m, nil, &RecordError{fmt.Errorf("handover: %s record with %d descriptors, not %d", m.Type, len(fds), want)}
	}
	return m, fds, nil
}

// rights returns the descriptors in the control data. They are
// close-on-exec already: Go reads unix sockets with MSG_CMSG_CLOEXEC on
// Linux.
func rights(oob []byte) ([]int, error) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, fmt.Errorf("handover: control data: %w", err)
	}
	var fds []int
	var errs []error
	for i := range msgs {
		if msgs[i].Header.Level != unix.SOL_SOCKET || msgs[i].Header.Type != unix.SCM_RIGHTS {
			continue
		}
		r, err := unix.ParseUnixRights(&msgs[i])
		if err != nil {
			errs = append(errs, err)
			continue
		}
		fds = append(fds, r...)
	}
	return fds, errors.Join(errs...)
}

// SetReadDeadline makes a pending and later Recv fail at t with an error
// wrapping os.ErrDeadlineExceeded, without closing anything; the zero
// time lifts it.
func (c *Conn) SetReadDeadline(t time.Time) error { return c.c.SetReadDeadline(t) }

// SetWriteDeadline bounds Send likewise.
func (c *Conn) SetWriteDeadline(t time.Time) error { return c.c.SetWriteDeadline(t) }

// SyscallConn gives access to the descriptor, to carry it across an
// exec.
func (c *Conn) SyscallConn() (syscall.RawConn, error) { return c.c.SyscallConn() }

// Close closes this end. Records queued on it, and the descriptors in
// them, are dropped by the kernel: their connections close.
func (c *Conn) Close() error { return c.c.Close() }
