package sdnotify

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/hitless/hitless/internal/unixsock"
)

// oobSize is room for the sender's credentials, plus the most file
// descriptors one message can carry (SCM_MAX_FD), so that descriptors are
// received and closed by us rather than half-received.
var oobSize = unix.CmsgSpace(unix.SizeofUcred) + unix.CmsgSpace(253*4)

func listen(path string, mode os.FileMode) (*Conn, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("sdnotify: listen %s: socket: %w", path, err)
	}
	// SO_PASSCRED before bind: the kernel attaches credentials to a
	// datagram when it is sent, according to the receiver's option at
	// that moment, so no datagram may arrive before it is set.
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PASSCRED, 1); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("sdnotify: listen %s: SO_PASSCRED: %w", path, err)
	}
	abstract := strings.HasPrefix(path, "@")
	if !abstract {
		if err := unix.Fchmod(fd, uint32(mode.Perm())); err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("sdnotify: listen %s: fchmod: %w", path, err)
		}
	}
	// x/sys/unix maps a leading "@" to the abstract namespace.
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("sdnotify: listen %s: bind: %w", path, err)
	}
	if !abstract {
		// The umask narrowed the mode bind gave the file: widen it.
		if err := unixsock.Chmod(path, mode); err != nil {
			unix.Close(fd)
			os.Remove(path)
			return nil, fmt.Errorf("sdnotify: listen: %w", err)
		}
	}
	f := os.NewFile(uintptr(fd), path)
	pc, err := net.FilePacketConn(f)
	f.Close() // FilePacketConn holds a duplicate
	if err != nil {
		if !abstract {
			os.Remove(path)
		}
		return nil, fmt.Errorf("sdnotify: listen %s: %w", path, err)
	}
	return &Conn{conn: pc.(*net.UnixConn), path: path}, nil
}

func (c *Conn) read(keepFDs bool) (Message, []*os.File, error) {
	buf := make([]byte, MaxMessageSize)
	oob := make([]byte, oobSize)
	n, oobn, flags, _, err := c.conn.ReadMsgUnix(buf, oob)
	if err != nil {
		return Message{}, nil, fmt.Errorf("sdnotify: read %s: %w", c.path, err)
	}
	cred, fds, ctrlErr := parseControl(oob[:oobn], flags)
	var m Message
	if flags&unix.MSG_TRUNC != 0 {
		m.Raw = buf[:n]
	} else {
		m = ParseMessage(buf[:n])
	}
	if cred != nil {
		m.PID, m.UID, m.GID = cred.Pid, cred.Uid, cred.Gid
	}
	var derr error
	switch {
	case flags&unix.MSG_TRUNC != 0:
		derr = ErrTooLarge
	case cred == nil || cred.Pid <= 0:
		// Only a datagram sent before SO_PASSCRED was set could lack
		// them; without a pid nobody can tell which child spoke.
		derr = ErrNoCredentials
	}
	keep := keepFDs && derr == nil
	var files []*os.File
	for _, fd := range fds {
		if keep {
			files = append(files, os.NewFile(uintptr(fd), fmt.Sprintf("passed fd %d", fd)))
		} else {
			unix.Close(fd)
		}
	}
	if derr != nil {
		return m, nil, &DatagramError{PID: m.PID, Err: derr}
	}
	dropped := len(fds) > 0 && !keepFDs
	if ctrlErr != nil || dropped {
		extra := ctrlErr
		if dropped {
			extra = errors.Join(extra, fmt.Errorf("%d file descriptors received and closed: fd passing (FDSTORE) is not supported", len(fds)))
		}
		m.Err = errors.Join(m.Err, extra)
	}
	return m, files, nil
}

// parseControl extracts the credentials and the file descriptors from the
// control messages. Every descriptor that came along is returned, for the
// caller to keep or close, even with an error.
func parseControl(oob []byte, flags int) (cred *unix.Ucred, fds []int, err error) {
	if flags&unix.MSG_CTRUNC != 0 {
		// The kernel closed what did not fit; what did is handled below.
		err = errors.New("control data truncated")
	}
	msgs, perr := unix.ParseSocketControlMessage(oob)
	if perr != nil {
		return nil, nil, errors.Join(err, fmt.Errorf("control data: %w", perr))
	}
	for i := range msgs {
		msg := &msgs[i]
		if msg.Header.Level != unix.SOL_SOCKET {
			continue
		}
		switch msg.Header.Type {
		case unix.SCM_CREDENTIALS:
			if c, cerr := unix.ParseUnixCredentials(msg); cerr == nil {
				cred = c
			}
		case unix.SCM_RIGHTS:
			rights, ferr := unix.ParseUnixRights(msg)
			if ferr != nil {
				err = errors.Join(err, fmt.Errorf("control data: %w", ferr))
				continue
			}
			fds = append(fds, rights...)
		}
	}
	return cred, fds, err
}
