//go:build linux

package main

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"text/template"
	"time"

	"github.com/hitless/hitless/internal/harness"
)

// The peers are the reverse proxies people put in front of two backends
// instead of a hot-restart supervisor: nginx, HAProxy and Caddy, as
// Debian packages them (scripts/bench.sh installs them). Each runs in
// the foreground, in a process group of its own, with a config the bench
// writes to a directory of its own and loopback ports only; the bench
// stops it by its pid, and its group. Each is set up the way its own
// documentation recommends for switching backends without downtime:
// peerSources lists every such choice with its source, and the report
// prints them.

// peerSources are the choices of the peers' configs, each with the
// documentation it follows. The report prints them under the table.
var peerSources = []struct{ peer, choice, source string }{
	{"nginx", "master process with worker processes (`master_process on`, `worker_processes auto`); a deploy rewrites the upstream and runs `nginx -s reload` (SIGHUP to the master: new workers start with the new config, the old ones shut down gracefully)",
		"https://nginx.org/en/docs/control.html, https://nginx.org/en/docs/beginners_guide.html#control"},
	{"nginx", "upstream keep-alive: `keepalive 32` in the upstream, `proxy_http_version 1.1` and `proxy_set_header Connection \"\"`",
		"https://nginx.org/en/docs/http/ngx_http_upstream_module.html#keepalive"},
	{"nginx", "client keep-alive left at its defaults (`keepalive_timeout 75s`, `keepalive_requests 1000`); `worker_rlimit_nofile` and `worker_connections` sized for the 10,000 connections of row 8",
		"https://nginx.org/en/docs/http/ngx_http_core_module.html#keepalive_timeout, https://nginx.org/en/docs/ngx_core_module.html#worker_connections"},
	{"HAProxy", "master-worker mode (`-W`); a reload is SIGUSR2 to the master, which re-executes itself and hands the listening sockets to the new worker; the old worker finishes its connections (soft stop) within `hard-stop-after 30s`",
		"https://docs.haproxy.org/2.6/management.html#4 (reloads), #3 (`-W`, `-x`), https://docs.haproxy.org/2.6/configuration.html#3.1-hard-stop-after"},
	{"HAProxy", "`stats socket … level admin expose-fd listeners`, the seamless reload of the listeners (in master-worker mode 2.6 passes them over its own socket pair; the option is kept as HAProxy's blog shows it)",
		"https://docs.haproxy.org/2.6/configuration.html#5.1-expose-fd%20listeners, https://www.haproxy.com/blog/truly-seamless-reloads-with-haproxy-no-more-hacks"},
	{"HAProxy", "HTTP keep-alive on both sides, HAProxy's default (`http-reuse safe` to the servers); `timeout client/server 30s`, `timeout connect 5s`",
		"https://docs.haproxy.org/2.6/configuration.html#4.2-option%20http-keep-alive, https://docs.haproxy.org/2.6/configuration.html#4.2-http-reuse"},
	{"HAProxy", "variant: `option idle-close-on-response`, so that an old worker answers the next request on an idle client connection with `Connection: close` instead of closing it at once",
		"https://docs.haproxy.org/2.6/configuration.html#4.2-option%20idle-close-on-response"},
	{"HAProxy", "its own best practice without a reload: both backends declared, the new one switched in with the runtime API, `set server be/<new> state ready` then `set server be/<old> state drain`",
		"https://docs.haproxy.org/2.6/management.html#9.3-set%20server, https://www.haproxy.com/blog/dynamic-configuration-haproxy-runtime-api"},
	{"HAProxy", "`maxconn 12000` for row 8's 10,000 connections, and `no strict-limits` where the machine's hard limit on open files is below what HAProxy reserves for that (2 × maxconn); it needs one descriptor per idle client connection",
		"https://docs.haproxy.org/2.6/configuration.html#3.2-maxconn, https://docs.haproxy.org/2.6/configuration.html#3.1-strict-limits"},
	{"Caddy", "`reverse_proxy` with its defaults (HTTP/1.1 keep-alive to the upstream); a deploy rewrites the Caddyfile and runs `caddy reload`, which POSTs it to the admin API's /load: Caddy's documented zero-downtime config reload",
		"https://caddyserver.com/docs/command-line#caddy-reload, https://caddyserver.com/docs/getting-started#zero-downtime-config-reload, https://caddyserver.com/docs/caddyfile/directives/reverse_proxy"},
	{"Caddy", "`auto_https off` (plain HTTP on loopback) and the admin endpoint on a loopback port of its own; its storage and autosave in the bench's directory",
		"https://caddyserver.com/docs/caddyfile/options"},
}

// peer is one proxy process as the bench runs it.
type peer struct {
	name string
	dir  string // its config, pid file, sockets and log
	log  string
	cmd  *exec.Cmd
	done chan struct{} // closed once cmd has been waited for
}

// startPeer writes the config file conf from t and data, runs argv in
// the foreground in a process group of its own, its output to
// dir/name.log, with env added to the bench's environment (less the
// socket-passing variables), and waits until it listens on front.
func startPeer(name, dir, front, conf string, t *template.Template, data any, argv, env []string) (*peer, error) {
	if err := writeAtomic(conf, t, data); err != nil {
		return nil, err
	}
	p, err := spawn(name, dir, argv, env)
	if err != nil {
		return nil, err
	}
	if err := waitListening(p, front); err != nil {
		p.stop()
		return nil, err
	}
	return p, nil
}

// spawn starts the process of startPeer.
func spawn(name, dir string, argv, env []string) (*peer, error) {
	p := &peer{name: name, dir: dir, log: filepath.Join(dir, name+".log"), done: make(chan struct{})}
	out, err := os.Create(p.log)
	if err != nil {
		return nil, err
	}
	defer out.Close() // the process has its own copy
	p.cmd = exec.Command(argv[0], argv[1:]...)
	p.cmd.Env = append(cleanEnv(), env...)
	p.cmd.Stdout, p.cmd.Stderr = out, out
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() { // owned by p: ends when the process exits
		p.cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

func (p *peer) pid() int { return p.cmd.Process.Pid }

// exited reports whether the process has exited.
func (p *peer) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM to the process, waits up to 10 s for its exit, and
// then kills what is left of its process group (workers included).
func (p *peer) stop() {
	if !p.exited() {
		syscall.Kill(p.pid(), syscall.SIGTERM)
		t := time.NewTimer(10 * time.Second)
		select {
		case <-p.done:
		case <-t.C:
			logf("%s (pid %d) still running 10s after SIGTERM: killed", p.name, p.pid())
		}
		t.Stop()
	}
	// The group is the one this process leads: its workers, and nothing
	// of anyone else's. A worker that outlived its master is reaped by
	// init; wait for that too, so that the next setup has the machine.
	syscall.Kill(-p.pid(), syscall.SIGKILL)
	<-p.done
	deadline := time.Now().Add(5 * time.Second)
	for syscall.Kill(-p.pid(), 0) == nil && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
}

// fail wraps err with the end of the peer's log.
func (p *peer) fail(err error) error {
	return fmt.Errorf("%s: %w; its log ends:\n%s", p.name, err, fileTail(p.log))
}

// fileTail is the last 4 KiB of a log file.
func fileTail(path string) string {
	b, _ := os.ReadFile(path)
	const most = 4 << 10
	if len(b) > most {
		b = b[len(b)-most:]
	}
	return string(b)
}

// writeAtomic writes a config file whole: to a new file, renamed over
// the old, so that a reload never reads half of it.
func writeAtomic(path string, t *template.Template, data any) error {
	var b strings.Builder
	if err := t.Execute(&b, data); err != nil {
		return err
	}
	tmp := path + ".new"
	if err := os.WriteFile(tmp, []byte(b.String()), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// runControl runs a peer's control command (nginx -s reload, caddy reload) and
// fails with its output if it fails.
func runControl(argv, env []string) error {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(cleanEnv(), env...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// noFile is the open-files limit the peers inherit from the bench (its
// soft limit, raised to the hard one at start).
func noFile() int {
	var l syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l) != nil {
		return 1024
	}
	return int(min(l.Cur, 1<<20))
}

// ---- nginx ----

var nginxConf = template.Must(template.New("nginx").Parse(`# Written by hitless-bench for one run.
daemon off;
master_process on;
worker_processes auto;
worker_rlimit_nofile {{.NoFile}};
pid {{.Dir}}/nginx.pid;
error_log {{.Dir}}/error.log notice;
events {
    worker_connections {{.WorkerConns}};
}
http {
    access_log off;
    client_body_temp_path {{.Dir}}/body;
    proxy_temp_path {{.Dir}}/proxy;
    fastcgi_temp_path {{.Dir}}/fastcgi;
    uwsgi_temp_path {{.Dir}}/uwsgi;
    scgi_temp_path {{.Dir}}/scgi;
    upstream backend {
        server {{.Upstream}};
        keepalive 32;
    }
    server {
        listen {{.Front}};
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
`))

// nginx is nginx in front of one upstream address at a time.
type nginx struct {
	*peer
	bin, conf string
	data      struct {
		Dir, Front, Upstream string
		NoFile, WorkerConns  int
	}
}

// startNginx starts nginx on front, proxying to upstream. It returns once
// nginx listens; the caller checks that answers come through.
func startNginx(bin, dir, front, upstream string) (*nginx, error) {
	n := &nginx{bin: bin, conf: filepath.Join(dir, "nginx.conf")}
	n.data.Dir, n.data.Front, n.data.Upstream = dir, front, upstream
	n.data.NoFile = noFile()
	n.data.WorkerConns = max(1024, n.data.NoFile*4/5)
	errorLog := filepath.Join(dir, "error.log")
	p, err := startPeer("nginx", dir, front, n.conf, nginxConf, n.data, []string{bin, "-p", dir, "-c", n.conf, "-e", errorLog}, nil)
	if err != nil {
		return nil, err
	}
	n.peer, p.log = p, errorLog
	return n, nil
}

// switchTo points the upstream at addr and reloads, as nginx's docs say:
// nginx -s reload, which sends the master SIGHUP. It returns once the
// signal is sent; the master then starts new workers, and the old ones
// finish their requests, and exit: until then they send requests to the
// old backend, so release waits for them.
func (n *nginx) switchTo(_ int, addr string) (release, error) {
	n.data.Upstream = addr
	if err := writeAtomic(n.conf, nginxConf, n.data); err != nil {
		return nil, err
	}
	old, err := harness.Children(n.pid())
	if err != nil {
		return nil, err
	}
	if err := runControl([]string{n.bin, "-p", n.data.Dir, "-c", n.conf, "-e", n.log, "-s", "reload"}, nil); err != nil {
		return nil, n.fail(err)
	}
	return n.gone(old), nil
}

// ---- HAProxy ----

var haproxyConf = template.Must(template.New("haproxy").Parse(`# Written by hitless-bench for one run.
global
    master-worker
    stats socket {{.Sock}} mode 600 level admin expose-fd listeners
    hard-stop-after 30s
    maxconn 12000
    ulimit-n {{.NoFile}}
    no strict-limits

defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
{{- if .IdleCloseOnResponse}}
    option idle-close-on-response
{{- end}}

frontend fe
    bind {{.Front}}
    default_backend be

backend be
{{- range .Servers}}
    server {{.Name}} {{.Addr}}{{if .Disabled}} disabled{{end}}
{{- end}}
`))

type haproxyServer struct {
	Name, Addr string
	Disabled   bool
}

// haproxy is HAProxy in master-worker mode in front of the backend. In
// reload mode a switch rewrites the one server's address and reloads;
// in runtime mode both slots are servers, and a switch sets their states
// through the runtime API.
type haproxy struct {
	*peer
	runtime bool
	resent  int // SIGUSR2 sent again: the master had dropped it
	data    struct {
		Sock, Front         string
		NoFile              int
		IdleCloseOnResponse bool
		Servers             []haproxyServer
	}
	conf string
}

var slotNames = [2]string{"blue", "green"}

// startHAProxy starts HAProxy on front, sending requests to slots[0]. In
// runtime mode both slots are declared, slots[1] disabled.
func startHAProxy(bin, dir, front string, slots [2]string, runtime, idleCloseOnResponse bool) (*haproxy, error) {
	h := &haproxy{runtime: runtime, conf: filepath.Join(dir, "haproxy.cfg")}
	h.data.Sock, h.data.Front, h.data.NoFile = filepath.Join(dir, "admin.sock"), front, min(noFile(), 65536)
	h.data.IdleCloseOnResponse = idleCloseOnResponse
	if runtime {
		for i, a := range slots {
			h.data.Servers = append(h.data.Servers, haproxyServer{Name: slotNames[i], Addr: a, Disabled: i != 0})
		}
	} else {
		h.data.Servers = []haproxyServer{{Name: "app", Addr: slots[0]}}
	}
	p, err := startPeer("haproxy", dir, front, h.conf, haproxyConf, h.data, []string{bin, "-W", "-f", h.conf}, nil)
	if err != nil {
		return nil, err
	}
	h.peer = p
	return h, nil
}

// switchTo sends new requests to slot's backend at addr. Reload mode:
// the config names addr, and SIGUSR2 to the master reloads it; the old
// worker finishes its connections and exits, and release waits for it.
// Runtime mode: the slot's server is set ready, then the other one
// drains; release waits until the drained server has no session left.
func (h *haproxy) switchTo(slot int, addr string) (release, error) {
	if h.runtime {
		for _, c := range []string{
			fmt.Sprintf("set server be/%s state ready", slotNames[slot]),
			fmt.Sprintf("set server be/%s state drain", slotNames[1-slot]),
		} {
			if out, err := h.cli(c); err != nil {
				return nil, h.fail(err)
			} else if out != "" {
				return nil, h.fail(fmt.Errorf("%s: %s", c, out))
			}
		}
		return func(d time.Duration) error { return h.drained(slotNames[1-slot], d) }, nil
	}
	h.data.Servers[0].Addr = addr
	if err := writeAtomic(h.conf, haproxyConf, h.data); err != nil {
		return nil, err
	}
	old, err := harness.Children(h.pid())
	if err != nil {
		return nil, err
	}
	if err := h.reload(); err != nil {
		return nil, err
	}
	return h.gone(old), nil
}

// reload sends the master SIGUSR2 and waits until it says it reloads.
// HAProxy 2.6's master drops a SIGUSR2 that comes within some tens of
// milliseconds of its previous reload's end; then the signal is sent
// again, every 250 ms, and counted in resent.
func (h *haproxy) reload() error {
	count := func() int {
		b, _ := os.ReadFile(h.log)
		return strings.Count(string(b), "Reloading HAProxy")
	}
	before := count()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if err := syscall.Kill(h.pid(), syscall.SIGUSR2); err != nil {
			return err
		}
		next := time.Now().Add(250 * time.Millisecond)
		for time.Now().Before(next) {
			if count() > before {
				return nil
			}
			time.Sleep(2 * time.Millisecond)
		}
		if time.Now().After(deadline) {
			return h.fail(fmt.Errorf("the master did not reload within 5s of SIGUSR2"))
		}
		h.resent++
	}
}

// drained waits until server has no current session (the runtime API's
// "show stat", field scur), for at most d.
func (h *haproxy) drained(server string, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		out, err := h.cli("show stat")
		if err != nil {
			return h.fail(err)
		}
		scur := -1
		for line := range strings.SplitSeq(out, "\n") {
			// pxname,svname,qcur,qmax,scur,…
			if f := strings.Split(line, ","); len(f) > 4 && f[0] == "be" && f[1] == server {
				scur, _ = strconv.Atoi(f[4])
			}
		}
		switch {
		case scur == 0:
			return nil
		case scur < 0:
			return h.fail(fmt.Errorf("show stat: no line for be/%s:\n%s", server, out))
		case time.Now().After(deadline):
			return h.fail(fmt.Errorf("be/%s still has %d sessions %v after it was set to drain", server, scur, d))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// cli sends one command to the runtime API and returns its answer,
// trimmed ("" for success of a set command).
func (h *haproxy) cli(command string) (string, error) {
	c, err := net.DialTimeout("unix", h.data.Sock, 5*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte(command + "\n")); err != nil {
		return "", err
	}
	var out strings.Builder
	sc := bufio.NewScanner(c)
	for sc.Scan() {
		out.WriteString(sc.Text() + "\n")
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("%s: %w", command, err)
	}
	return strings.TrimSpace(out.String()), nil
}

// ---- Caddy ----

var caddyConf = template.Must(template.New("caddy").Parse(`# Written by hitless-bench for one run.
{
	admin {{.Admin}}
	auto_https off
	storage file_system {{.Dir}}/data
}

http://{{.Front}} {
	bind {{.Host}}
	reverse_proxy {{.Upstream}}
}
`))

// caddy is Caddy in front of one upstream address at a time.
type caddy struct {
	*peer
	bin, conf string
	env       []string
	data      struct{ Dir, Admin, Front, Host, Upstream string }
}

// startCaddy runs caddy on front, proxying to upstream, its admin
// endpoint on a loopback port of its own and its state under dir.
func startCaddy(bin, dir, front, upstream string) (*caddy, error) {
	admin, err := quietAddr()
	if err != nil {
		return nil, err
	}
	host, _, _ := net.SplitHostPort(front)
	c := &caddy{bin: bin, conf: filepath.Join(dir, "Caddyfile"),
		env: []string{"HOME=" + dir, "XDG_CONFIG_HOME=" + filepath.Join(dir, "config"), "XDG_DATA_HOME=" + filepath.Join(dir, "data")}}
	c.data.Dir, c.data.Admin, c.data.Front, c.data.Host, c.data.Upstream = dir, admin, front, host, upstream
	p, err := startPeer("caddy", dir, front, c.conf, caddyConf, c.data, []string{bin, "run", "--config", c.conf, "--adapter", "caddyfile"}, c.env)
	if err != nil {
		return nil, err
	}
	c.peer = p
	return c, nil
}

// switchTo points reverse_proxy at addr and runs caddy reload, which
// returns once the running Caddy has loaded the new config and stopped
// the old one (its servers shut down: idle connections closed, active
// ones finished), so nothing is left to release.
func (c *caddy) switchTo(_ int, addr string) (release, error) {
	c.data.Upstream = addr
	if err := writeAtomic(c.conf, caddyConf, c.data); err != nil {
		return nil, err
	}
	if err := runControl([]string{c.bin, "reload", "--config", c.conf, "--adapter", "caddyfile"}, c.env); err != nil {
		return nil, c.fail(err)
	}
	return func(time.Duration) error { return nil }, nil
}

// ---- shared ----

// release waits, for at most the duration given, until the proxy sends
// nothing more to the backend it switched away from: then the backend can
// be stopped.
type release func(time.Duration) error

// gone returns a release that waits until every process of old (the
// worker processes before a reload) has exited.
func (p *peer) gone(old map[int]string) release {
	return func(d time.Duration) error {
		deadline := time.Now().Add(d)
		for pid := range old {
			for harness.Alive(pid) {
				if time.Now().After(deadline) {
					return p.fail(fmt.Errorf("old worker %d still runs %v after the reload", pid, d))
				}
				time.Sleep(5 * time.Millisecond)
			}
		}
		return nil
	}
}

// waitListening waits until addr accepts a connection, for at most 10 s,
// or fails if p exits first.
func waitListening(p *peer, addr string) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		switch {
		case p.exited():
			return p.fail(errors.New("exited at start"))
		case time.Now().After(deadline):
			return p.fail(fmt.Errorf("not listening on %s within 10s", addr))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// quietAddr returns a free loopback address whose port is below the
// kernel's range for outgoing connections: a backend slot that is free
// between two backends cannot be taken meanwhile as the local port of a
// client's connection.
func quietAddr() (string, error) {
	lo := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			lo, _ = strconv.Atoi(f[0])
		}
	}
	if lo <= 11000 {
		return "", fmt.Errorf("no ports below the outgoing range (it starts at %d)", lo)
	}
	start := 10000 + int(time.Now().UnixNano()%int64(lo-11000))
	for i := range 1000 {
		addr := "127.0.0.1:" + strconv.Itoa(start+i)
		ln, err := net.Listen("tcp", addr)
		if err == nil {
			ln.Close()
			return addr, nil
		}
	}
	return "", fmt.Errorf("no free port from %d", start)
}

// peerVersion is a peer's version as its binary tells it, and that of
// the Debian package it came from: "nginx 1.22.1 (Debian 1.22.1-9)".
func peerVersion(name, bin string) string {
	if bin == "" {
		return name + ": not installed"
	}
	args := []string{"-v"}
	if name == "caddy" {
		args = []string{"version"}
	}
	v := version(bin, args...)
	if m := versionNumber.FindString(v); m != "" {
		v = m
	}
	v = peerNames[name] + " " + v
	if pkg := debianVersion(bin); pkg != "" {
		v += " (Debian " + pkg + ")"
	}
	return v
}

var (
	versionNumber = regexp.MustCompile(`\d+\.\d+(\.\d+)?`)
	peerNames     = map[string]string{"nginx": "nginx", "haproxy": "HAProxy", "caddy": "Caddy"}
)

// debianVersion is the version of the Debian package that installed
// bin, or "".
func debianVersion(bin string) string {
	out, err := exec.Command("dpkg-query", "-S", bin).Output()
	if err != nil {
		return ""
	}
	pkg, _, ok := strings.Cut(strings.TrimSpace(string(out)), ":")
	if !ok {
		return ""
	}
	v, err := exec.Command("dpkg-query", "-W", "-f", "${Version}", pkg).Output()
	if err != nil {
		return ""
	}
	return "package " + pkg + " " + strings.TrimSpace(string(v))
}
