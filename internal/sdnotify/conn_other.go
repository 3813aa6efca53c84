//go:build !linux

package sdnotify

import (
	"errors"
	"fmt"
	"os"
)

// errNoPassCred is why a Conn cannot work here: without the kernel's word
// on who sent a notification, the supervisor could not tell its children
// apart.
var errNoPassCred = fmt.Errorf("receiving notifications needs the senders' credentials (SO_PASSCRED), which only Linux gives: %w", errors.ErrUnsupported)

func listen(path string, mode os.FileMode) (*Conn, error) {
	return nil, fmt.Errorf("sdnotify: listen %s: %w", path, errNoPassCred)
}

// read is never reached: listen returns no Conn here.
func (c *Conn) read(bool) (Message, []*os.File, error) {
	return Message{}, nil, fmt.Errorf("sdnotify: read %s: %w", c.path, errNoPassCred)
}
