package childproc

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// TestLameDuckResponsesWithoutBody: during the lame duck every HTTP/1
// response says "Connection: close", including those whose handler writes
// no body: an implicit 200 (net/http writes that header itself, once the
// handler returned), HEAD, 204 and 304. The connection is then closed by
// the server after the response.
func TestLameDuckResponsesWithoutBody(t *testing.T) {
	logger, rec := newLogger(t)
	// A long quiet period keeps the lame duck waiting for the test's
	// connections, whatever the timing; it ends when they close.
	lc := New(Options{Logger: logger, LameDuck: 20 * time.Second, LameDuckQuiet: 10 * time.Second})
	mux := http.NewServeMux()
	mux.HandleFunc("/nothing", func(http.ResponseWriter, *http.Request) {})
	mux.HandleFunc("/header-only", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Test", "1") // a header, but still no Write or WriteHeader
	})
	mux.HandleFunc("/no-content", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })
	mux.HandleFunc("/not-modified", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNotModified) })
	mux.HandleFunc("/body", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "body") })
	ln := listenLocal(t)
	lc.ServeHTTP(&http.Server{Handler: mux}, ln)
	errc := runAsync(lc)
	rec.waitFor(t, "childproc: serving", testWait)

	type keepAlive struct {
		method, path string
		status       int
		c            net.Conn
		br           *bufio.Reader
	}
	conns := []*keepAlive{
		{method: "GET", path: "/nothing", status: http.StatusOK},
		{method: "HEAD", path: "/nothing", status: http.StatusOK},
		{method: "GET", path: "/header-only", status: http.StatusOK},
		{method: "GET", path: "/no-content", status: http.StatusNoContent},
		{method: "GET", path: "/not-modified", status: http.StatusNotModified},
		{method: "HEAD", path: "/no-content", status: http.StatusNoContent},
		{method: "HEAD", path: "/body", status: http.StatusOK},
	}
	send := func(ka *keepAlive) *http.Response {
		t.Helper()
		req, err := http.NewRequest(ka.method, "http://x"+ka.path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := req.Write(ka.c); err != nil {
			t.Fatalf("%s %s: %v", ka.method, ka.path, err)
		}
		ka.c.SetReadDeadline(time.Now().Add(testWait))
		resp, err := http.ReadResponse(ka.br, req) // req: a HEAD response has no body
		if err != nil {
			t.Fatalf("%s %s on the keep-alive connection: %v", ka.method, ka.path, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != ka.status {
			t.Errorf("%s %s: status %d, want %d", ka.method, ka.path, resp.StatusCode, ka.status)
		}
		return resp
	}
	for _, ka := range conns {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		ka.c, ka.br = c, bufio.NewReader(c)
		if resp := send(ka); resp.Close {
			t.Fatalf("%s %s: Connection: close before the drain", ka.method, ka.path)
		}
	}

	lc.Stop()
	rec.waitFor(t, "1 stop accepting", testWait)
	for _, ka := range conns {
		if resp := send(ka); !resp.Close {
			t.Errorf("%s %s during the lame duck: no Connection: close (header %q)", ka.method, ka.path, resp.Header)
			continue
		}
		// And the server does close it, cleanly, after the response.
		if _, err := ka.br.ReadByte(); err != io.EOF {
			t.Errorf("%s %s: read after the last response = %v, want EOF", ka.method, ka.path, err)
		}
	}
	for _, ka := range conns {
		ka.c.Close()
	}
	if err := waitErr(t, errc); err != nil {
		t.Fatal(err)
	}
}
