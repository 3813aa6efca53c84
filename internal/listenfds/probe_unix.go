//go:build unix

package listenfds

import (
	"errors"
	"fmt"
	"net"
	"strconv"

	"golang.org/x/sys/unix"
)

// Probe describes descriptor fd without taking it over: it neither closes
// it nor changes its flags.
func Probe(fd int) (Socket, error) {
	var s Socket
	sotype, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	switch {
	case errors.Is(err, unix.EBADF):
		return s, errors.New("descriptor is not open")
	case errors.Is(err, unix.ENOTSOCK):
		return s, nil
	case err != nil:
		return s, fmt.Errorf("getsockopt SO_TYPE: %w", err)
	}
	s.Type = sotype
	if acc, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN); err == nil {
		s.Listening = acc != 0
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return s, fmt.Errorf("getsockname: %w", err)
	}
	s.Addr = sockaddrToAddr(sa, sotype)
	return s, nil
}

// Datagram reports whether s is a datagram socket.
func (s Socket) Datagram() bool { return s.Type == unix.SOCK_DGRAM }

func sockaddrToAddr(sa unix.Sockaddr, sotype int) net.Addr {
	ipAddr := func(ip net.IP, port int, zone string) net.Addr {
		if sotype == unix.SOCK_DGRAM {
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
		case unix.SOCK_DGRAM:
			network = "unixgram"
		case unix.SOCK_SEQPACKET:
			network = "unixpacket"
		}
		return &net.UnixAddr{Name: sa.Name, Net: network}
	}
	return nil
}
