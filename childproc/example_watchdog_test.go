package childproc_test

import (
	"context"
	"database/sql"
	"log"
	"time"

	"github.com/hitless/hitless/childproc"
)

// A server that cannot reach its database stops pinging the watchdog, so
// that the supervisor deals with it, and pings again once the database
// answers.
func ExampleOptions_healthy() {
	var db *sql.DB // opened in main
	lc := childproc.New(childproc.Options{
		// Called before each ping; its context ends at the next one.
		Healthy: func(ctx context.Context) error { return db.PingContext(ctx) },
	})
	_ = lc // ServeHTTP, AddCloser, then return lc.Run()
}

// A server without a Lifecycle pings by itself.
func ExampleWatchdogInterval() {
	every, ok := childproc.WatchdogInterval()
	if !ok {
		return // no watchdog, or one meant for another process
	}
	ctx, stop := context.WithCancel(context.Background())
	defer stop() // stop pinging when the server stops serving
	go func() {
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			if err := childproc.Notify("WATCHDOG=1"); err != nil {
				log.Print(err)
			}
			select {
			case <-tick.C:
			case <-ctx.Done():
				return
			}
		}
	}()
	// ... serve until told to stop ...
}
