//go:build linux

package control

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hitless/hitless/supervisor"
	"github.com/hitless/hitless/upgrade"
)

// An upgrade hands the control socket over with the requests in flight
// (Handoff ends their waits with supervisor.ErrCarried, so that the
// supervisor keeps their places):
// a reload waiting for its verdict, the upgrade itself, a request half
// read, a client that connects during the exec. The next image answers
// every one of them on its connection; the reload rejoins the reload it
// had asked for, rather than asking for a second one.
func TestHandoffCarriesRequests(t *testing.T) {
	blocked := func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }
	old := &fake{entered: make(chan string, 4), reload: blocked, upgrade: func(ctx context.Context, _ string) error { return blocked(ctx) }}
	s := serve(t, old)
	type result struct {
		what string
		err  error
	}
	results := make(chan result, 4)
	go func() {
		_, err := dialT(t, s.Path()).Reload(context.Background(), time.Minute)
		results <- result{"reload", err}
	}()
	go func() {
		r, err := dialT(t, s.Path()).Upgrade(context.Background(), "/usr/local/bin/hitless", time.Minute)
		if err == nil && r.Result != "ok" {
			err = errors.New("upgrade reply without its verdict: " + r.Result)
		}
		results <- result{"upgrade", err}
	}()
	<-old.entered
	<-old.entered
	half, err := net.Dial("unix", s.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer half.Close()
	half.Write([]byte(`{"cmd":`))

	st := upgrade.NewState(1, "test")
	if err := s.Handoff(context.Background(), st); err != nil {
		t.Fatal(err)
	}
	// Between the images: a new client waits in the queue, unrefused.
	go func() {
		_, err := dialT(t, s.Path()).Status(context.Background())
		results <- result{"status during the exec", err}
	}()
	s2 := restoreNext(t, st)
	now := &fake{upgradeResult: func() error { return nil }, st: supervisor.Status{PID: 42, Stats: supervisor.Stats{LastUpgrade: &supervisor.UpgradeResult{ID: 1, Result: "ok"}}}}
	go s2.Serve(now)
	defer s2.Close()
	half.Write([]byte(`"status"}` + "\n"))
	var r Reply
	line := readReplyLine(t, half)
	if json.Unmarshal(line, &r) != nil || !r.OK || r.Status == nil || r.Status.PID != 42 {
		t.Errorf("the request half read at the hand-over: %q", line)
	}
	for range 3 {
		select {
		case r := <-results:
			if r.err != nil {
				t.Errorf("%s: %v", r.what, r.err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a carried request was not answered")
		}
	}
	if now.rejoins.Load() != 1 || now.reloads.Load() != 0 || now.statuses.Load() == 0 {
		t.Errorf("the next image got rejoins %d, reloads %d, statuses %d; want the carried reload to rejoin, and no new one",
			now.rejoins.Load(), now.reloads.Load(), now.statuses.Load())
	}
	// It rejoins as the caller it was named in the old image: its own
	// place, not any other carried reload's.
	if asked, rejoined := old.reloadedAs.Load(), now.rejoinedAs.Load(); asked == 0 || rejoined != asked {
		t.Errorf("the reload was asked as caller %d and rejoined as %d", asked, rejoined)
	}
}

// A promote or a rollback whose answer comes as the hand-over ends its
// wait gets that answer here, from this image: it took effect ("ok"),
// or there was nothing to end ("no_trial"). It is not carried, to be
// asked again in the next image, where a promote that took effect would
// answer no_trial. Only a wait the hand-over cut off (the handler
// returns the context's error) is carried.
func TestHandoffKeepsTrialAnswers(t *testing.T) {
	for _, cmd := range []string{CmdPromote, CmdRollback} {
		for _, tc := range []struct {
			name   string
			answer func(ctx context.Context) error
			code   string // "" for ok; "carried" for no answer here
		}{
			{"took effect", func(context.Context) error { return nil }, ""},
			{"no trial", func(context.Context) error { return supervisor.ErrNoTrial }, CodeNoTrial},
			{"cut off", func(ctx context.Context) error { return ctx.Err() }, "carried"},
		} {
			t.Run(cmd+" "+tc.name, func(t *testing.T) {
				f := &fake{entered: make(chan string, 1), trialAt: func(ctx context.Context, _ string) error {
					<-ctx.Done() // answered as the hand-over ends the wait
					return tc.answer(ctx)
				}}
				s := serve(t, f)
				got := make(chan error, 1)
				go func() {
					_, err := dialT(t, s.Path()).endTrial(context.Background(), cmd, time.Minute)
					got <- err
				}()
				<-f.entered
				st := upgrade.NewState(1, "test")
				if err := s.Handoff(context.Background(), st); err != nil {
					t.Fatal(err)
				}
				var cs controlState
				if err := st.Get("control", &cs); err != nil {
					t.Fatal(err)
				}
				if tc.code == "carried" {
					if len(cs.Requests) != 1 || cs.Requests[0].Cmd != cmd {
						t.Errorf("carried %+v, want the %s cut off", cs.Requests, cmd)
					}
					return
				}
				if len(cs.Requests) != 0 {
					t.Errorf("carried %+v: the %s, answered, would be asked again", cs.Requests, cmd)
				}
				var re *RemoteError
				select {
				case err := <-got:
					switch {
					case tc.code == "" && err != nil:
						t.Errorf("%s: %v, want ok", cmd, err)
					case tc.code != "" && (!errors.As(err, &re) || re.Code != tc.code):
						t.Errorf("%s: %v, want code %s", cmd, err, tc.code)
					}
				case <-time.After(10 * time.Second):
					t.Fatalf("%s: no answer from the image that took it", cmd)
				}
			})
		}
	}
}

// A stop that comes right after an upgrade, before the next image's
// Serve ran: Close still answers every carried request, the upgrade and
// the reload with "stopping", the half-read stop with its "stopped",
// rather than close their connections unanswered.
func TestCloseAnswersCarriedBeforeServe(t *testing.T) {
	blocked := func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }
	old := &fake{entered: make(chan string, 2), reload: blocked, upgrade: func(ctx context.Context, _ string) error { return blocked(ctx) }}
	s := serve(t, old)
	half, err := net.Dial("unix", s.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer half.Close()
	half.Write([]byte(`{"cmd":`))
	waitReadAll(t, s)
	errs := make(chan error, 2)
	go func() {
		_, err := dialT(t, s.Path()).Reload(context.Background(), time.Minute)
		errs <- err
	}()
	go func() {
		_, err := dialT(t, s.Path()).Upgrade(context.Background(), "", time.Minute)
		errs <- err
	}()
	<-old.entered
	<-old.entered

	st := upgrade.NewState(1, "test")
	if err := s.Handoff(context.Background(), st); err != nil {
		t.Fatal(err)
	}
	s2 := restoreNext(t, st)
	half.Write([]byte(`"stop"}` + "\n"))
	s2.Close() // no Serve
	for range 2 {
		var re *RemoteError
		if err := <-errs; !errors.As(err, &re) || re.Code != CodeStopping {
			t.Errorf("a carried request closed before Serve: %v, want %s", err, CodeStopping)
		}
	}
	var r Reply
	if line := readReplyLine(t, half); json.Unmarshal(line, &r) != nil || !r.OK {
		t.Errorf("the stop half read at the hand-over: %q, want ok", line)
	}
}

// restoreNext is the next image's side of a hand-over: the server it
// restores from st, whose descriptors it then owns.
func restoreNext(t *testing.T, st *upgrade.State) *Server {
	t.Helper()
	next, err := upgrade.Loopback(st)
	if err != nil {
		t.Fatal(err)
	}
	s, err := Restore(next)
	if err != nil {
		t.Fatal(err)
	}
	next.Commit()
	return s
}

// An exec that fails: the same server resumes, and answers what it had
// carried, the upgrade with the verdict of its failure.
func TestHandoffResume(t *testing.T) {
	verdict := &supervisor.UpgradeError{UpgradeResult: supervisor.UpgradeResult{ID: 1, Result: "failed", Reason: "exec: permission denied"}}
	f := &fake{entered: make(chan string, 2),
		upgrade: func(ctx context.Context, _ string) error {
			<-ctx.Done()
			return ctx.Err()
		},
		upgradeResult: func() error { return verdict },
	}
	s := serve(t, f)
	errc := make(chan error, 1)
	go func() {
		_, err := dialT(t, s.Path()).Upgrade(context.Background(), "", time.Minute)
		errc <- err
	}()
	<-f.entered
	if err := s.Handoff(context.Background(), upgrade.NewState(1, "test")); err != nil {
		t.Fatal(err)
	}
	s.Resume()
	var uf *UpgradeFailed
	if err := <-errc; !errors.As(err, &uf) || uf.Result.Result != "failed" {
		t.Errorf("upgrade after a failed exec: %v", err)
	}
	if _, err := dialT(t, s.Path()).Status(context.Background()); err != nil {
		t.Errorf("status after Resume: %v", err)
	}
}

// A request half read at the hand-over, whose rest is then too slow or too
// long, gets from the next image the reply a fresh connection gets for
// the same bytes, and is logged as one.
func TestHandoffPartialBadRequest(t *testing.T) {
	for _, tc := range []struct {
		name          string
		before, after string // sent before the hand-over, and after it
		want          string
	}{
		{"timeout", `{"cmd":"status"`, "", "no complete request line within 300ms"},
		{"too long", `{"cmd":"reload","timeout":"` + strings.Repeat("9", 3000), strings.Repeat("9", 2000), "request longer than 4096 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := serve(t, &fake{})
			half, err := net.Dial("unix", s.Path())
			if err != nil {
				t.Fatal(err)
			}
			defer half.Close()
			if _, err := half.Write([]byte(tc.before)); err != nil {
				t.Fatal(err)
			}
			waitReadAll(t, s)

			st := upgrade.NewState(1, "test")
			if err := s.Handoff(context.Background(), st); err != nil {
				t.Fatal(err)
			}
			next, err := upgrade.Loopback(st)
			if err != nil {
				t.Fatal(err)
			}
			var cs controlState
			if err := next.Get("control", &cs); err != nil {
				t.Fatal(err)
			}
			if len(cs.Requests) != 1 || cs.Requests[0].Cmd != "" || string(cs.Requests[0].Partial) != tc.before {
				t.Fatalf("carried requests %+v, want one with partial %q", cs.Requests, tc.before)
			}
			s2, err := Restore(next)
			if err != nil {
				t.Fatal(err)
			}
			next.Commit()
			var logs lockedBuffer
			s2.Log = slog.New(slog.NewTextHandler(&logs, nil))
			s2.ReadTimeout = 300 * time.Millisecond
			go s2.Serve(&fake{})
			defer s2.Close()
			if tc.after != "" {
				if _, err := half.Write([]byte(tc.after)); err != nil {
					t.Fatal(err)
				}
			}
			resumed := readReplyLine(t, half)
			if !strings.Contains(logs.String(), "control socket: bad request") {
				t.Errorf("the bad carried request was not logged: %s", logs.String())
			}

			fresh, err := net.Dial("unix", s2.Path())
			if err != nil {
				t.Fatal(err)
			}
			defer fresh.Close()
			if _, err := fresh.Write([]byte(tc.before + tc.after)); err != nil {
				t.Fatal(err)
			}
			want := readReplyLine(t, fresh)

			var r Reply
			if json.Unmarshal(want, &r) != nil || r.Code != CodeBadRequest || !strings.Contains(r.Error, tc.want) {
				t.Errorf("fresh connection got %q, want a bad request %q", want, tc.want)
			}
			if !bytes.Equal(resumed, want) {
				t.Errorf("carried connection got %q, a fresh one %q", resumed, want)
			}
		})
	}
}

// waitReadAll waits until s serves one connection and has read all that
// was sent on it, so that a hand-over carries it as read so far.
func waitReadAll(t *testing.T, s *Server) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		s.mu.Lock()
		var conns []*net.UnixConn
		for c := range s.conns {
			conns = append(conns, c)
		}
		s.mu.Unlock()
		if len(conns) == 1 {
			queued := -1
			if rc, err := conns[0].SyscallConn(); err == nil {
				rc.Control(func(fd uintptr) {
					if n, err := unix.IoctlGetInt(int(fd), unix.SIOCINQ); err == nil {
						queued = n
					}
				})
			}
			if queued == 0 {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("the server did not read the request")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// readReplyLine reads the reply line the server sends on c. (Not to the
// end: the old image's copy of a carried connection stays open.)
func readReplyLine(t *testing.T, c net.Conn) []byte {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(c).ReadBytes('\n')
	if err != nil {
		t.Errorf("no reply line: %q %v", line, err)
	}
	return line
}

// lockedBuffer is a bytes.Buffer for a log written by the server's
// goroutines while the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// A reply that completes its verdict with a status (which generation
// serves) while the supervisor hands over, and cannot answer, does not
// hold the hand-over up: the status wait ends with it, and the reply goes
// out, verdict known, without that detail. Before, the status waited 10 s
// on the server's own context, and the hand-over gave up at 5 s.
func TestHandoffDuringReply(t *testing.T) {
	inStatus := make(chan struct{})
	f := &fake{status: func(ctx context.Context) (supervisor.Status, error) {
		close(inStatus)
		<-ctx.Done() // the supervisor is busy handing over
		return supervisor.Status{}, ctx.Err()
	}}
	s := serve(t, f)
	got := make(chan error, 1)
	go func() {
		_, err := dialT(t, s.Path()).Reload(context.Background(), time.Minute)
		got <- err
	}()
	<-inStatus
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	began := time.Now()
	st := upgrade.NewState(1, "test")
	if err := s.Handoff(ctx, st); err != nil {
		t.Fatalf("Handoff: %v (after %v)", err, time.Since(began))
	}
	if took := time.Since(began); took > 2*time.Second {
		t.Errorf("the hand-over waited %v for a reply's status", took)
	}
	if err := <-got; err != nil {
		t.Errorf("the reload, answered before the hand-over: %v", err)
	}
	var cs controlState
	if err := st.Get("control", &cs); err != nil || len(cs.Requests) != 0 {
		t.Errorf("carried %v (%v): an answered reload would be asked again", cs.Requests, err)
	}
}

// A hand-over that fails (a request that does not stop in time) leaves a
// server that Resume brings back: it accepts again, and the request that
// stopped late, cut off by the hand-over, is answered here rather than
// left carried for an exec that will not come.
func TestHandoffFailsThenResumes(t *testing.T) {
	release := make(chan struct{})
	f := &fake{entered: make(chan string, 1), reload: func(ctx context.Context) error {
		<-release // deaf to the hand-over for a while
		return ctx.Err()
	}}
	s := serve(t, f)
	got := make(chan error, 1)
	go func() {
		_, err := dialT(t, s.Path()).Reload(context.Background(), time.Minute)
		got <- err
	}()
	<-f.entered
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := s.Handoff(ctx, upgrade.NewState(1, "test")); err == nil {
		t.Fatal("Handoff succeeded with a request that does not stop")
	}
	s.Resume()
	if _, err := dialT(t, s.Path()).Status(context.Background()); err != nil {
		t.Errorf("status after the failed hand-over: %v", err)
	}
	close(release)
	select {
	case err := <-got:
		if err != nil {
			t.Errorf("the reload cut off by the failed hand-over: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Error("the reload cut off by the failed hand-over was never answered")
	}
	if f.rejoins.Load() != 1 {
		t.Errorf("rejoins %d: the reload was asked already, and rejoins", f.rejoins.Load())
	}
}
