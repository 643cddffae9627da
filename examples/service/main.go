// Command service is a small JSON service that moves money between
// accounts, built from txnhttp: every POST runs in a transaction that txn
// retries when the database reports a lost race, the client gets one
// response (the committed attempt's), and an event is published only after
// the commit. It runs on an SQLite file in a temporary directory by default,
// or on PostgreSQL or MySQL/MariaDB:
//
//	go run ./examples/service
//	go run ./examples/service --backend postgres --dsn 'postgres://postgres@127.0.0.1:5432/test?sslmode=disable'
//	go run ./examples/service --backend mysql --dsn 'root@tcp(127.0.0.1:3306)/test'
//
//	curl -s -XPOST localhost:8080/transfer -d '{"from":1,"to":2,"amount":10}'
//	curl -s 'localhost:8080/balance?id=2'
//
// POST /transfer {"from":1,"to":2,"amount":10} answers 200 with both new
// balances, 400 for a malformed request, 404 for an unknown account, 422
// for insufficient funds (these roll back), 503 with Retry-After when the
// transfer kept conflicting until the attempt limit. GET /balance?id=N reads
// outside any transaction (safe methods are skipped), GET /balance the
// total.
//
// What to copy: the Runner (open), the middleware with conflict keys taken
// from the request body (newService), the handler that reports its errors
// by returning them (transfer), and the repository reached through
// txnsql.Tx (queries.go).
package main

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"time"

	_ "github.com/go-sql-driver/mysql"
	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/txnkit/txn"
	"github.com/txnkit/txn/backends/txnmysql"
	"github.com/txnkit/txn/backends/txnpgx"
	"github.com/txnkit/txn/backends/txnsql"
	"github.com/txnkit/txn/backends/txnsqlite"
	"github.com/txnkit/txn/txnhttp"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "service:", err)
		os.Exit(1)
	}
}

// config is the command line.
type config struct {
	backend, dsn, table, addr string
	accounts, maxConns        int
	noKeys                    bool
}

func parse(args []string) (config, error) {
	var c config
	fs := flag.NewFlagSet("service", flag.ContinueOnError)
	fs.StringVar(&c.backend, "backend", "sqlite", "sqlite, postgres or mysql")
	fs.StringVar(&c.dsn, "dsn", "", "data source name (default: a temporary SQLite file, or the local test server)")
	fs.StringVar(&c.table, "table", "txn_service_accounts", "accounts table (dropped and created)")
	fs.StringVar(&c.addr, "addr", "127.0.0.1:8080", "listen address")
	fs.IntVar(&c.accounts, "accounts", 2, "number of accounts, each starting with 1000")
	fs.IntVar(&c.maxConns, "max-conns", 10, "database connections at most")
	fs.BoolVar(&c.noKeys, "no-keys", false, "do not name conflict keys (to compare)")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if c.accounts < 2 || c.maxConns < 1 {
		return c, errors.New("--accounts must be at least 2 and --max-conns at least 1")
	}
	for _, r := range c.table {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_') {
			return c, fmt.Errorf("--table %q: use lower-case letters, digits and _", c.table)
		}
	}
	return c, nil
}

func run(ctx context.Context, args []string, out io.Writer) error {
	c, err := parse(args)
	if err != nil {
		return err
	}
	svc, err := open(ctx, c, slog.New(slog.NewTextHandler(out, nil)))
	if err != nil {
		return err
	}
	defer svc.Close()
	ln, err := net.Listen("tcp", c.addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: svc.Handler(), ReadHeaderTimeout: 5 * time.Second}
	fmt.Fprintf(out, "service: %s on http://%s\n", c.backend, ln.Addr())
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// service is the application: a database, its Runner, and the HTTP routes.
type service struct {
	db      *sql.DB
	r       *txnsql.Runner
	table   string
	dollar  bool
	noKeys  bool
	log     *slog.Logger
	cleanup func()

	// published counts the events published after a commit (where a real
	// service would write to a queue).
	published atomic.Int64
}

// open connects to the database, builds the Runner, and creates the
// accounts.
func open(ctx context.Context, c config, log *slog.Logger) (*service, error) {
	s := &service{table: c.table, noKeys: c.noKeys, log: log, cleanup: func() {}}
	var err error
	switch c.backend {
	case "sqlite":
		path := c.dsn
		if path == "" {
			dir, derr := os.MkdirTemp("", "txn-service-")
			if derr != nil {
				return nil, derr
			}
			s.cleanup = func() { _ = os.RemoveAll(dir) }
			path = filepath.Join(dir, "service.db")
		}
		// WAL, busy_timeout and BEGIN IMMEDIATE: see txnsqlite's README.
		if s.db, err = txnsqlite.Open(path); err == nil {
			s.r = txnsqlite.New(s.db)
		}
	case "postgres":
		s.db, err = sql.Open("pgx", orDefault(c.dsn, "TXN_PG_DSN", "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"))
		s.dollar = true
		// Serializable: two transfers on the same account fail one with
		// 40001, which txnpgx.Classify marks retryable.
		s.r = txnsql.New(s.db, txn.WithClassifier(txnpgx.Classify)).
			WithBegin(txnsql.TxOptions(sql.TxOptions{Isolation: sql.LevelSerializable}))
	case "mysql":
		s.db, err = sql.Open("mysql", orDefault(c.dsn, "TXN_MYSQL_DSN", "root@tcp(127.0.0.1:3306)/test"))
		// Serializable: the balance read takes a shared lock; two
		// transfers upgrading theirs deadlock (1213), which is retried.
		s.r = txnmysql.New(s.db).WithBegin(txnmysql.TxOptions(sql.TxOptions{Isolation: sql.LevelSerializable}))
	default:
		return nil, fmt.Errorf("--backend %q: want sqlite, postgres or mysql", c.backend)
	}
	if err != nil {
		s.cleanup()
		return nil, err
	}
	s.db.SetMaxOpenConns(c.maxConns)
	s.db.SetMaxIdleConns(c.maxConns)
	if err := New(s.db, s.table, s.dollar).Setup(ctx, c.accounts, 1000); err != nil {
		s.Close()
		return nil, fmt.Errorf("setup: %w", err)
	}
	return s, nil
}

// Close closes the database.
func (s *service) Close() {
	_ = s.db.Close()
	s.cleanup()
}

func orDefault(v, env, def string) string {
	if v != "" {
		return v
	}
	if e := os.Getenv(env); e != "" {
		return e
	}
	return def
}

// transferRequest is the body of POST /transfer.
type transferRequest struct {
	From   int64 `json:"from"`
	To     int64 `json:"to"`
	Amount int64 `json:"amount"`
}

// Handler returns the service's routes.
func (s *service) Handler() http.Handler {
	opts := []txnhttp.Option{
		// GET /balance reads outside any transaction.
		txnhttp.SkipSafeMethods(),
		// JSON errors with the default statuses.
		txnhttp.ErrorHandler(func(w http.ResponseWriter, r *http.Request, err error) {
			code, msg := txnhttp.Status(r, err)
			if code == http.StatusServiceUnavailable && errors.Is(err, txn.ErrAttemptsExhausted) {
				w.Header().Set("Retry-After", "1")
			}
			if code >= 500 {
				s.log.Warn("transfer failed", "status", code, "error", err)
			}
			writeJSON(w, code, map[string]string{"error": msg})
		}),
	}
	if !s.noKeys {
		// Transfers touching the same account take turns inside this
		// process instead of conflicting in the database.
		opts = append(opts, txnhttp.Keys(func(r *http.Request) []string {
			var req transferRequest
			if json.NewDecoder(r.Body).Decode(&req) != nil {
				return nil // the handler answers 400
			}
			return []string{"account:" + strconv.FormatInt(req.From, 10), "account:" + strconv.FormatInt(req.To, 10)}
		}))
	}
	mw := txnhttp.New(s.r, opts...)
	mux := http.NewServeMux()
	mux.Handle("POST /transfer", mw.Wrap(txnhttp.HandlerFunc(s.transfer)))
	mux.Handle("GET /balance", mw.Wrap(txnhttp.HandlerFunc(s.balance)))
	return mux
}

// transfer moves money. It may run several times for one request, each
// time in a fresh transaction with the same body: it only talks to the
// database through the transaction and keeps no state outside it. It
// returns database errors; the middleware retries those that are
// retryable.
func (s *service) transfer(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	var req transferRequest
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil || req.Amount <= 0 || req.From == req.To {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "want {\"from\":id,\"to\":id,\"amount\":n>0}, two different accounts"})
		return nil // a 4xx status rolls back; the response is sent as is
	}
	tx, err := txnsql.Tx(ctx) // the transaction txnhttp started; an error, never the pool, if missing
	if err != nil {
		return err
	}
	q := New(tx, s.table, s.dollar)
	balance, err := q.GetBalance(ctx, req.From)
	if errors.Is(err, sql.ErrNoRows) {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": fmt.Sprintf("no account %d", req.From)})
		return nil
	}
	if err != nil {
		return err
	}
	if balance < req.Amount {
		writeJSON(w, http.StatusUnprocessableEntity, map[string]string{"error": "insufficient funds"})
		return nil
	}
	if _, err := q.AddBalance(ctx, AddBalanceParams{ID: req.From, Amount: -req.Amount}); err != nil {
		return err
	}
	n, err := q.AddBalance(ctx, AddBalanceParams{ID: req.To, Amount: req.Amount})
	if err != nil {
		return err
	}
	if n == 0 {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": fmt.Sprintf("no account %d", req.To)})
		return nil // rolls the debit back
	}
	to, err := q.GetBalance(ctx, req.To)
	if err != nil {
		return err
	}
	// Published once, after the commit, before the response leaves.
	if err := txn.OnCommit(ctx, func() { s.published.Add(1) }); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]int64{"from_balance": balance - req.Amount, "to_balance": to})
	return nil
}

// balance answers GET /balance?id=N with one account, GET /balance with the
// total. Safe methods run outside any transaction, so the repository is
// built on the pool through txnsql.TxOr.
func (s *service) balance(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	q := New(txnsql.TxOr(ctx, s.db), s.table, s.dollar)
	if v := r.URL.Query().Get("id"); v != "" {
		id, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "bad id"})
			return nil
		}
		b, err := q.GetBalance(ctx, id)
		if errors.Is(err, sql.ErrNoRows) {
			writeJSON(w, http.StatusNotFound, map[string]string{"error": fmt.Sprintf("no account %d", id)})
			return nil
		}
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, map[string]int64{"id": id, "balance": b})
		return nil
	}
	t, err := q.Total(ctx)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]int64{"total": t})
	return nil
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	var buf bytes.Buffer
	_ = json.NewEncoder(&buf).Encode(v)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(buf.Bytes())
}
