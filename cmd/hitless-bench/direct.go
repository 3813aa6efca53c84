package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// direct is the test server run on its own, bound to a fixed address:
// the baseline, and the naive stop-then-start restart.
type direct struct {
	server string
	addr   string
	args   []string

	cmd      *exec.Cmd
	exited   chan struct{} // closed once cmd has been waited for
	exitedAt time.Time     // written before exited is closed
}

// startDirect starts the test server on addr; a cleanup stops it.
func (s *scenario) startDirect(addr string, args ...string) *direct {
	d := &direct{server: s.server, addr: addr, args: args}
	s.check(d.start())
	s.Cleanup(d.stop)
	return d
}

// start starts the server and waits until it says it serves.
func (d *direct) start() error {
	d.cmd = exec.Command(d.server, append([]string{"-addr", d.addr}, d.args...)...)
	d.cmd.Env = cleanEnv()
	d.cmd.Stdout = io.Discard
	stderr, err := d.cmd.StderrPipe()
	if err != nil {
		return err
	}
	if err := d.cmd.Start(); err != nil {
		return err
	}
	ready, exited := make(chan struct{}), make(chan struct{})
	d.exited = exited
	go func() { // owned by d: ends when the server exits
		sc := bufio.NewScanner(stderr)
		once := sync.OnceFunc(func() { close(ready) })
		for sc.Scan() {
			if strings.Contains(sc.Text(), `msg="childproc: serving"`) {
				once()
			}
		}
		d.cmd.Wait()
		d.exitedAt = time.Now()
		close(exited)
	}()
	t := time.NewTimer(10 * time.Second)
	defer t.Stop()
	select {
	case <-ready:
		return nil
	case <-exited:
		return fmt.Errorf("test server exited at start")
	case <-t.C:
		d.cmd.Process.Kill()
		<-exited
		return fmt.Errorf("test server not serving within 10s")
	}
}

// restart is the naive restart: SIGTERM, wait for the exit, start again.
func (d *direct) restart() error {
	d.stop()
	return d.start()
}

// stop sends SIGTERM and waits for the exit, unless the server has exited.
func (d *direct) stop() {
	d.term()
	<-d.exited
}

// term sends SIGTERM, unless the server has exited: it drains, then
// exits.
func (d *direct) term() {
	select {
	case <-d.exited:
	default:
		d.cmd.Process.Signal(syscall.SIGTERM)
	}
}

func (d *direct) pid() int { return d.cmd.Process.Pid }

// cleanEnv is the environment without any socket-passing variables, so
// that the test server binds its own address.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "LISTEN_") || k == "NOTIFY_SOCKET" || strings.HasPrefix(k, "SERVER_STARTER_") || strings.HasPrefix(k, "EINHORN_") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// directStarts starts the test server n times the way a bare supervisor
// would (fork+exec with an inherited socket and a notify socket of the
// bench's own) and returns, for each, the time from the start to its
// READY=1: the floor any supervisor pays for the same child.
func directStarts(server string, n int, tmp string) ([]time.Duration, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	defer ln.Close()
	lf, err := ln.(*net.TCPListener).File()
	if err != nil {
		return nil, err
	}
	defer lf.Close()
	path := tmp + "/direct-notify"
	nc, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	env := append(cleanEnv(), "SERVER_STARTER_PORT="+ln.Addr().String()+"=3", "NOTIFY_SOCKET="+path)
	var out []time.Duration
	buf := make([]byte, 4096)
	for range n {
		cmd := exec.Command(server)
		cmd.Env, cmd.ExtraFiles = env, []*os.File{lf}
		t0 := time.Now()
		if err := cmd.Start(); err != nil {
			return nil, err
		}
		nc.SetReadDeadline(t0.Add(10 * time.Second))
		for {
			k, err := nc.Read(buf)
			if err != nil {
				cmd.Process.Kill()
				cmd.Wait()
				return nil, fmt.Errorf("direct start: no READY=1: %w", err)
			}
			if strings.Contains("\n"+string(buf[:k])+"\n", "\nREADY=1\n") {
				break
			}
		}
		out = append(out, time.Since(t0))
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	}
	return out, nil
}
