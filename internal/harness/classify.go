package harness

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
)

// Class is the kind of a failed request, as a client sees it.
type Class string

// The classes, from the connection's start to its answer.
const (
	Refused   Class = "refused" // connect got ECONNREFUSED: nothing was sent
	Reset     Class = "reset"   // ECONNRESET or EPIPE
	EOF       Class = "EOF"     // the connection closed before a whole response
	Timeout   Class = "timeout" // the client's deadline passed
	BadStatus Class = "status"  // an answer, with another status than wanted
	Other     Class = "other"
)

// Classes lists every class, in the order reports show them.
var Classes = []Class{Refused, Reset, EOF, Timeout, BadStatus, Other}

// StatusError is an answer whose status was not the one wanted.
type StatusError struct {
	Code   int
	Status string // as the response gave it, e.g. "503 Service Unavailable"
}

func (e *StatusError) Error() string { return "unexpected status " + e.Status }

// Classify files a client error under one class: the first that matches,
// by the error's chain, then by its text, since net/http flattens some
// causes into strings.
func Classify(err error) Class {
	var se *StatusError
	var ne net.Error
	switch {
	case errors.As(err, &se):
		return BadStatus
	case errors.Is(err, syscall.ECONNREFUSED):
		return Refused
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return Reset
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return EOF
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded),
		errors.As(err, &ne) && ne.Timeout():
		return Timeout
	}
	s := err.Error()
	switch {
	case strings.Contains(s, "connection refused"):
		return Refused
	case strings.Contains(s, "connection reset"), strings.Contains(s, "broken pipe"):
		return Reset
	case strings.Contains(s, "EOF"), strings.Contains(s, "server closed idle connection"):
		return EOF
	case strings.Contains(s, "timeout"), strings.Contains(s, "deadline exceeded"):
		return Timeout
	}
	return Other
}

// checkStatus returns a *StatusError unless code is want, or, when want is
// 0, any 2xx.
func checkStatus(code int, status string, want int) error {
	if want == 0 && code/100 == 2 || code == want {
		return nil
	}
	return &StatusError{Code: code, Status: status}
}
