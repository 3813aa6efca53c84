//go:build linux

package control

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/hitless/hitless/supervisor"
	"github.com/hitless/hitless/upgrade"
)

// An upgrade hands the control socket over with the requests in flight:
// a reload waiting for its verdict, the upgrade itself, a request half
// read, a client that connects during the exec. The next image answers
// every one of them on its connection.
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
	next, err := upgrade.Loopback(st)
	if err != nil {
		t.Fatal(err)
	}
	s2, err := Restore(next)
	if err != nil {
		t.Fatal(err)
	}
	next.Commit()
	now := &fake{upgradeResult: func() error { return nil }, st: supervisor.Status{PID: 42, Stats: supervisor.Stats{LastUpgrade: &supervisor.UpgradeResult{ID: 1, Result: "ok"}}}}
	go s2.Serve(now)
	defer s2.Close()
	half.Write([]byte(`"status"}` + "\n"))
	var r Reply
	half.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(half).ReadBytes('\n')
	if err != nil || json.Unmarshal(line, &r) != nil || !r.OK || r.Status == nil || r.Status.PID != 42 {
		t.Errorf("the request half read at the hand-over: %q %v", line, err)
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
	if now.reloads.Load() != 1 || now.statuses.Load() == 0 {
		t.Errorf("the next image got reloads %d, statuses %d", now.reloads.Load(), now.statuses.Load())
	}
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
