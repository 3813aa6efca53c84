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

// bareStarter starts the test server the way a bare supervisor would
// (fork+exec with an inherited socket and a notify socket of the bench's
// own): the floor any supervisor pays for the same child, to set beside
// a reload under hitless.
type bareStarter struct {
	server string
	ln     net.Listener
	lf     *os.File
	nc     *net.UnixConn
	env    []string
	buf    []byte
}

// bareStart is one start: fork+exec (os/exec's Start returns once the
// exec is done), then the exec to READY=1.
type bareStart struct {
	fork, toReady time.Duration
}

func (b bareStart) total() time.Duration { return b.fork + b.toReady }

func newBareStarter(server, tmp string) (*bareStarter, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	lf, err := ln.(*net.TCPListener).File()
	if err != nil {
		ln.Close()
		return nil, err
	}
	path := tmp + "/direct-notify"
	nc, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		lf.Close()
		ln.Close()
		return nil, err
	}
	env := append(cleanEnv(), "SERVER_STARTER_PORT="+ln.Addr().String()+"=3", "NOTIFY_SOCKET="+path)
	return &bareStarter{server: server, ln: ln, lf: lf, nc: nc, env: env, buf: make([]byte, 4096)}, nil
}

func (b *bareStarter) Close() {
	b.nc.Close()
	b.lf.Close()
	b.ln.Close()
}

// start starts the server once, waits for its READY=1, and stops it.
func (b *bareStarter) start() (bareStart, error) {
	cmd := exec.Command(b.server)
	cmd.Env, cmd.ExtraFiles = b.env, []*os.File{b.lf}
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		return bareStart{}, err
	}
	forked := time.Now()
	b.nc.SetReadDeadline(t0.Add(10 * time.Second))
	for {
		k, err := b.nc.Read(b.buf)
		if err != nil {
			cmd.Process.Kill()
			cmd.Wait()
			return bareStart{}, fmt.Errorf("direct start: no READY=1: %w", err)
		}
		if strings.Contains("\n"+string(b.buf[:k])+"\n", "\nREADY=1\n") {
			break
		}
	}
	st := bareStart{fork: forked.Sub(t0), toReady: time.Since(forked)}
	cmd.Process.Signal(syscall.SIGTERM)
	cmd.Wait()
	return st, nil
}
