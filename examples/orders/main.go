// Command orders is the demo server for hitless: POST /orders answers 202
// at once and hands the order to a background writer that batches inserts
// into SQLite. It is the bug this project exists to fix: a service that
// acknowledges work before storing it loses every queued order when a
// deploy kills it. With childproc (the default) a reload under hitless
// loses nothing; with -graceful=false it behaves like the classic service
// and dies on SIGTERM with its queue.
//
//	hitless run --listen http=tcp://127.0.0.1:8080 -- orders -db orders.db
//	curl -XPOST localhost:8080/orders -d '{"item":"book","qty":1}'
//	kill -HUP $(pidof hitless)   # reload: new generation, old one drains
//	curl localhost:8080/orders/count
package main

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/hitless/hitless/childproc"
	_ "modernc.org/sqlite"
)

type config struct {
	listen       string
	dbPath       string
	graceful     bool
	writeDelay   time.Duration
	batchSize    int
	flushEvery   time.Duration
	handlerDelay time.Duration
	drainTimeout time.Duration
	lameDuck     time.Duration
	count        bool
}

func main() {
	var cfg config
	flag.StringVar(&cfg.listen, "listen", "127.0.0.1:8080", "address to serve on: the inherited socket bound to it, or bound here when not supervised")
	flag.StringVar(&cfg.dbPath, "db", "orders.db", "SQLite database file (WAL mode: old and new generations write to it at once)")
	flag.BoolVar(&cfg.graceful, "graceful", true, "drain on SIGTERM with childproc; false exits at once, like the classic service, losing queued orders")
	flag.DurationVar(&cfg.writeDelay, "write-delay", 0, "extra time each batch insert takes, to have orders queued when SIGTERM comes")
	flag.IntVar(&cfg.batchSize, "batch", 100, "orders per insert transaction")
	flag.DurationVar(&cfg.flushEvery, "flush", 50*time.Millisecond, "longest an order waits in the queue before its batch is written")
	flag.DurationVar(&cfg.handlerDelay, "handler-delay", 0, "time POST /orders takes before answering (a slow handler)")
	flag.DurationVar(&cfg.drainTimeout, "drain-timeout", childproc.DefaultDrainTimeout, "overall drain deadline; keep it below the supervisor's")
	flag.DurationVar(&cfg.lameDuck, "lame-duck", 0, "longest lame-duck window (0: childproc's default; negative: none, to measure what it buys)")
	flag.BoolVar(&cfg.count, "count", false, "print the number of stored orders and exit")
	flag.Parse()

	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("pid", os.Getpid(), "generation", generation())
	if err := run(cfg, log); err != nil {
		log.Error("orders: exiting", "err", err)
		os.Exit(1)
	}
}

// generation is the supervisor's generation number, for logs and /healthz.
func generation() string {
	for _, k := range []string{"HITLESS_GENERATION", "SERVER_STARTER_GENERATION"} {
		if v := os.Getenv(k); v != "" {
			return v
		}
	}
	return "0"
}

func run(cfg config, log *slog.Logger) error {
	db, err := openDB(cfg.dbPath)
	if err != nil {
		return err
	}
	if cfg.count {
		defer db.Close()
		n, err := countOrders(context.Background(), db)
		if err != nil {
			return err
		}
		fmt.Println(n)
		return nil
	}

	socks, err := childproc.Inherit()
	if err != nil {
		db.Close()
		return err
	}
	ln, err := socks.Listen("tcp", cfg.listen)
	if err != nil {
		db.Close()
		return err
	}
	log.Info("orders: listening", "addr", ln.Addr().String(), "sockets", socks.String())
	socks.Close() // anything else we were given

	lc := childproc.New(childproc.Options{Logger: log, DrainTimeout: cfg.drainTimeout, LameDuck: cfg.lameDuck})
	// Registered first, so it closes last: after the writer flushed.
	lc.AddCloser("db", func(context.Context) error { return db.Close() })

	w := &writer{db: db, queue: make(chan order, 10000), batchSize: cfg.batchSize, flushEvery: cfg.flushEvery, delay: cfg.writeDelay, log: log}
	if err := lc.Go("order-writer", w.run); err != nil {
		return err
	}

	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	r.Use(gin.Recovery())
	r.POST("/orders", func(c *gin.Context) {
		var req struct {
			Item string `json:"item"`
			Qty  int    `json:"qty"`
			Ref  string `json:"ref"` // the client's own reference, stored for reconciliation
		}
		if err := c.ShouldBindJSON(&req); err != nil {
			c.JSON(http.StatusBadRequest, gin.H{"error": err.Error()})
			return
		}
		if cfg.handlerDelay > 0 {
			select {
			case <-time.After(cfg.handlerDelay):
			case <-c.Request.Context().Done():
				c.JSON(http.StatusServiceUnavailable, gin.H{"error": "shutting down, retry"})
				return
			}
		}
		// An Idempotency-Key makes a retried request the same order: the
		// unique index on ref stores it once. It also lets Go's client
		// retry a POST whose keep-alive connection the server closed as
		// the request went out (see loadgen).
		if key := c.GetHeader("Idempotency-Key"); key != "" {
			req.Ref = key
		}
		o := order{ID: newID(), Item: req.Item, Qty: req.Qty, Ref: req.Ref, Created: time.Now(), Generation: generation(), PID: os.Getpid()}
		if err := w.enqueue(c.Request.Context(), o); err != nil {
			// Not acknowledged, so not lost: the client knows to retry.
			c.JSON(http.StatusServiceUnavailable, gin.H{"error": err.Error()})
			return
		}
		c.JSON(http.StatusAccepted, gin.H{"id": o.ID})
	})
	r.GET("/orders/count", func(c *gin.Context) {
		n, err := countOrders(c.Request.Context(), db)
		if err != nil {
			c.JSON(http.StatusInternalServerError, gin.H{"error": err.Error()})
			return
		}
		c.JSON(http.StatusOK, gin.H{"stored": n, "queued": len(w.queue)})
	})
	r.GET("/healthz", func(c *gin.Context) {
		status := "ok"
		select {
		case <-lc.Draining():
			status = "draining"
		default:
		}
		c.JSON(http.StatusOK, gin.H{"status": status, "pid": os.Getpid(), "generation": generation(), "graceful": cfg.graceful})
	})

	srv := &http.Server{Handler: r, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 90 * time.Second}
	if !cfg.graceful {
		// The classic service: serve, and let SIGTERM's default action
		// end the process wherever it is, queue and all.
		log.Warn("orders: graceful drain off; SIGTERM loses queued orders")
		if err := childproc.Ready(""); err != nil {
			return err
		}
		return srv.Serve(ln)
	}
	lc.ServeHTTP(srv, ln)
	return lc.Run()
}

func newID() string {
	var b [12]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

type order struct {
	ID, Item, Ref string
	Qty           int
	Created       time.Time
	Generation    string
	PID           int
}

func openDB(path string) (*sql.DB, error) {
	// WAL lets the old and the new generation (two processes) write to
	// the same file while they overlap; busy_timeout makes one wait for
	// the other's transaction instead of failing with SQLITE_BUSY.
	dsn := "file:" + path + "?_pragma=journal_mode(WAL)&_pragma=busy_timeout(10000)&_pragma=synchronous(NORMAL)"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	// One connection per process: SQLite has one writer at a time anyway.
	db.SetMaxOpenConns(1)
	_, err = db.Exec(`CREATE TABLE IF NOT EXISTS orders (
		id TEXT PRIMARY KEY,
		item TEXT NOT NULL,
		qty INTEGER NOT NULL,
		ref TEXT NOT NULL,
		created_at TEXT NOT NULL,
		generation TEXT NOT NULL,
		pid INTEGER NOT NULL)`)
	if err == nil {
		_, err = db.Exec(`CREATE UNIQUE INDEX IF NOT EXISTS orders_ref ON orders (ref) WHERE ref != ''`)
	}
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("create schema in %s: %w", path, err)
	}
	return db, nil
}

func countOrders(ctx context.Context, db *sql.DB) (int, error) {
	var n int
	if err := db.QueryRowContext(ctx, "SELECT COUNT(*) FROM orders").Scan(&n); err != nil {
		return 0, fmt.Errorf("count orders: %w", err)
	}
	return n, nil
}

// writer batches orders into insert transactions.
type writer struct {
	db         *sql.DB
	queue      chan order
	batchSize  int
	flushEvery time.Duration
	delay      time.Duration
	log        *slog.Logger
}

func (w *writer) enqueue(ctx context.Context, o order) error {
	select {
	case w.queue <- o:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("queue full: %w", context.Cause(ctx))
	}
}

// run is the writer task. It stops when ctx is cancelled, which childproc
// does only after every request was answered: whatever is queued then is
// all there will be, so it writes it all before returning.
func (w *writer) run(ctx context.Context) {
	batch := make([]order, 0, w.batchSize)
	tick := time.NewTicker(w.flushEvery)
	defer tick.Stop()
	flush := func() {
		if len(batch) > 0 {
			w.insert(batch)
			batch = batch[:0]
		}
	}
	for {
		select {
		case o := <-w.queue:
			batch = append(batch, o)
			if len(batch) == w.batchSize {
				flush()
			}
		case <-tick.C:
			flush()
		case <-ctx.Done():
			n := len(batch) + len(w.queue)
			for {
				select {
				case o := <-w.queue:
					batch = append(batch, o)
					if len(batch) == w.batchSize {
						flush()
					}
					continue
				default:
				}
				break
			}
			flush()
			w.log.Info("orders: writer flushed the queue", "orders", n)
			return
		}
	}
}

// insert writes one batch, retrying: an acknowledged order must not be
// dropped because the other generation held the write lock a bit long.
func (w *writer) insert(batch []order) {
	for attempt := 1; ; attempt++ {
		err := w.insertOnce(batch)
		if err == nil {
			return
		}
		if attempt == 10 {
			w.log.Error("orders: batch lost", "orders", len(batch), "err", err)
			return
		}
		w.log.Warn("orders: insert failed, retrying", "attempt", attempt, "err", err)
		time.Sleep(time.Duration(attempt) * 50 * time.Millisecond)
	}
}

func (w *writer) insertOnce(batch []order) error {
	tx, err := w.db.Begin()
	if err != nil {
		return err
	}
	defer tx.Rollback()
	stmt, err := tx.Prepare("INSERT OR IGNORE INTO orders (id, item, qty, ref, created_at, generation, pid) VALUES (?, ?, ?, ?, ?, ?, ?)")
	if err != nil {
		return err
	}
	defer stmt.Close()
	for _, o := range batch {
		if _, err := stmt.Exec(o.ID, o.Item, o.Qty, o.Ref, o.Created.UTC().Format(time.RFC3339Nano), o.Generation, o.PID); err != nil {
			return err
		}
	}
	if w.delay > 0 {
		time.Sleep(w.delay) // a slow database: orders pile up in the queue meanwhile
	}
	return tx.Commit()
}
