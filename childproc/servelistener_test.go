package childproc

import (
	"context"
	"errors"
	"net"
	"sync/atomic"
	"testing"
	"time"
)

// A server in grpc-go's shape: its accept loop hands each connection to
// a goroutine that begins with it later, and its stop closes what was
// accepted but not begun with. ServeListener closes the listener and
// calls stop only once the server has read from every connection it
// accepted, so stop finds none it would drop.
func TestServeListenerWaitsForAcceptedConns(t *testing.T) {
	logger, _ := newLogger(t)
	lc := New(Options{Logger: logger, DrainTimeout: 5 * time.Second})
	ln := listenLocal(t)
	addr := ln.Addr().String()

	accepted := make(chan net.Conn, 1)
	var begun atomic.Bool // the test lets the server begin with the conn
	var dropped atomic.Int32
	stopCalled := make(chan struct{})
	serveReturned := make(chan error, 1)
	lc.ServeListener("grpc-like", ln, func(ln net.Listener) error {
		for {
			c, err := ln.Accept()
			if err != nil {
				serveReturned <- err
				return err
			}
			accepted <- c
		}
	}, func(ctx context.Context) error {
		if !begun.Load() {
			dropped.Add(1) // grpc-go's GracefulStop would close it here
		}
		close(stopCalled)
		return nil
	})
	errc := runAsync(lc)

	client, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	c := <-accepted
	lc.Stop()
	// Step 1 closes the listener: the accept loop ends.
	select {
	case err := <-serveReturned:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("Accept after the close: %v, want net.ErrClosed", err)
		}
	case <-time.After(testWait):
		t.Fatal("serve did not see its listener closed")
	}
	select {
	case <-stopCalled:
		t.Fatal("stop called while an accepted connection was untouched")
	default:
	}
	// The server begins with the connection: it reads.
	begun.Store(true)
	if _, err := client.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Read(make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-stopCalled:
	case <-time.After(testWait):
		t.Fatal("stop not called once the connection was taken up")
	}
	if n := dropped.Load(); n != 0 {
		t.Errorf("stop ran before the server had the connection")
	}
	c.Close()
	if err := waitErr(t, errc); err != nil {
		t.Errorf("Run: %v", err)
	}
	// The listener is closed once, whoever else closes it: grpc-go's
	// stop closes it again.
	if _, err := net.Dial("tcp", addr); err == nil {
		t.Error("the listener still accepts after the drain")
	}
}

// A connection nobody takes up holds stop back only until the drain's
// deadline; the drain then goes on, and says so.
func TestServeListenerUntakenConnAtDeadline(t *testing.T) {
	logger, logs := newLogger(t)
	lc := New(Options{Logger: logger, DrainTimeout: 300 * time.Millisecond})
	ln := listenLocal(t)
	accepted := make(chan net.Conn, 1)
	stopped := make(chan struct{})
	lc.ServeListener("stuck", ln, func(ln net.Listener) error {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		accepted <- c
		<-stopped
		return nil
	}, func(ctx context.Context) error {
		close(stopped)
		return ctx.Err()
	})
	errc := runAsync(lc)
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	c := <-accepted
	defer c.Close()
	lc.Stop()
	logs.waitFor(t, "accepted connections not taken up by the deadline", testWait)
	if err := waitErr(t, errc); !errors.Is(err, ErrDrainIncomplete) {
		t.Errorf("Run: %v, want the drain cut short", err)
	}
}
