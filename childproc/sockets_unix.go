//go:build unix

package childproc

import (
	"errors"
	"fmt"
	"net"
	"strconv"

	"golang.org/x/sys/unix"
)

// Socket types, as socket.sotype holds them (SOCK_STREAM needs no name).
const (
	sockDgram     = unix.SOCK_DGRAM
	sockSeqpacket = unix.SOCK_SEQPACKET
)

// errAddrInUse is how bind says another socket holds the address.
var errAddrInUse error = unix.EADDRINUSE

// closeOnExec keeps fd from leaking into processes this one starts.
func closeOnExec(fd int) { unix.CloseOnExec(fd) }

// probe describes descriptor fd without taking ownership of it.
func probe(fd int) (*socket, error) {
	sk := &socket{fd: fd}
	sotype, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	switch {
	case errors.Is(err, unix.EBADF):
		return nil, errors.New("descriptor is not open")
	case errors.Is(err, unix.ENOTSOCK):
		// systemd may pass plain files (FileDescriptorStoreMax=, "stored").
		// They are kept so that indexes line up, but cannot be listened on.
		return sk, nil
	case err != nil:
		return nil, fmt.Errorf("getsockopt SO_TYPE: %w", err)
	}
	sk.sotype = sotype
	if acc, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN); err == nil {
		sk.listening = acc != 0
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return nil, fmt.Errorf("getsockname: %w", err)
	}
	sk.addr = sockaddrToAddr(sa, sotype)
	return sk, nil
}

func sockaddrToAddr(sa unix.Sockaddr, sotype int) net.Addr {
	ipAddr := func(ip net.IP, port int, zone string) net.Addr {
		if sotype == sockDgram {
			return &net.UDPAddr{IP: ip, Port: port, Zone: zone}
		}
		return &net.TCPAddr{IP: ip, Port: port, Zone: zone}
	}
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return ipAddr(net.IP(sa.Addr[:]).To16(), sa.Port, "")
	case *unix.SockaddrInet6:
		zone := ""
		if sa.ZoneId != 0 {
			zone = strconv.Itoa(int(sa.ZoneId))
			if ifi, err := net.InterfaceByIndex(int(sa.ZoneId)); err == nil {
				zone = ifi.Name
			}
		}
		return ipAddr(append(net.IP(nil), sa.Addr[:]...), sa.Port, zone)
	case *unix.SockaddrUnix:
		network := "unix"
		switch sotype {
		case sockDgram:
			network = "unixgram"
		case sockSeqpacket:
			network = "unixpacket"
		}
		return &net.UnixAddr{Name: sa.Name, Net: network}
	}
	return nil
}
