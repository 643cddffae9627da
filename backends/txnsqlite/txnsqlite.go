// Package txnsqlite runs txn transactions on SQLite through the pure-Go
// driver modernc.org/sqlite (driver name "sqlite"); no cgo is needed.
//
// The quickest start opens a database file with the settings this package
// recommends and builds a Runner over it:
//
//	db, err := txnsqlite.Open("app.db")
//	if err != nil { ... }
//	defer db.Close()
//	r := txnsqlite.New(db)
//	err = r.Run(ctx, func(ctx context.Context, tx *sql.Tx) error {
//		_, err := tx.ExecContext(ctx, "UPDATE accounts SET balance = balance - ? WHERE id = ?", amt, from)
//		return err
//	})
//
// # What is retried
//
// Classify treats SQLITE_BUSY (5) and all its extended codes
// (SQLITE_BUSY_RECOVERY 261, SQLITE_BUSY_SNAPSHOT 517, SQLITE_BUSY_TIMEOUT
// 773) and SQLITE_LOCKED (6) with its extended codes (such as
// SQLITE_LOCKED_SHAREDCACHE 262) as retryable: another connection held a
// lock this transaction needed. SQLITE_PROTOCOL (15), which SQLite returns
// in WAL mode when a connection kept losing the race for the locks while
// starting a transaction, is retryable too. Everything else is permanent,
// SQLITE_CANTOPEN (14) included: a database file that cannot be opened
// (missing directory, permissions) does not fix itself. Run rolls the
// transaction back before it retries, which releases this connection's
// locks and its read snapshot.
//
// # WAL mode and busy_timeout
//
// Use WAL mode (PRAGMA journal_mode=WAL) for anything with more than one
// connection: readers then never block the writer nor the writer the
// readers, and only writers wait for each other. SQLite still allows one
// writer at a time.
//
// busy_timeout (PRAGMA busy_timeout=ms) makes a connection that finds the
// write lock taken wait for it, polling, for up to that long before it
// returns SQLITE_BUSY. Without it (the default is 0) every collision between
// two writers is an immediate SQLITE_BUSY: Run will retry it, but a few
// seconds of busy_timeout is cheaper than a rollback and a backoff. Open
// sets 5 s. Keep it shorter than the deadlines you give Run: with
// modernc.org/sqlite v1.46.1 a wait for the lock is not cut short when the
// context ends. Run stops waiting for its BEGIN IMMEDIATE when the context
// ends (the BEGIN is left to its connection, which rolls back what begins
// late), but a statement of fn's own that waits for the lock, such as the
// first statement of a Deferred transaction when it writes, can outlast
// its context by up to busy_timeout.
//
// # Why BEGIN IMMEDIATE
//
// A plain BEGIN is DEFERRED: the transaction takes no lock until its first
// statement, and in WAL mode its first read fixes the snapshot it reads
// from. When it later writes it must take the write lock, and SQLite will
// not wait for it: a connection that holds a read snapshot cannot usefully
// wait for a writer, because once that writer commits the snapshot is stale.
// So if another connection holds the write lock at that moment the write
// fails at once with SQLITE_BUSY, and if another connection has committed
// since the snapshot was taken it fails with SQLITE_BUSY_SNAPSHOT, which no
// amount of waiting could fix: the transaction would have to write on top
// of data it has not seen. In both cases the busy handler is not called,
// however long busy_timeout is. Without WAL the same read-then-write pattern
// deadlocks two connections that both hold a shared lock and both want the
// write lock; SQLite breaks the deadlock by failing one of them with
// SQLITE_BUSY at once, again without honouring busy_timeout.
//
// Run retries both cases correctly, but under contention a read-modify-write
// transaction that begins DEFERRED keeps failing at its first write and
// running fn again. BEGIN IMMEDIATE takes the write lock at BEGIN, where
// busy_timeout applies, so transactions that write simply queue for the lock
// and never fail on the upgrade. modernc.org/sqlite does this for every
// transaction that is not read-only when the DSN carries _txlock=immediate;
// Open sets it. A transaction begun with sql.TxOptions{ReadOnly: true} (see
// Deferred) still begins DEFERRED, so readers do not queue behind writers.
package txnsqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"net/url"
	"strings"
	"time"

	"github.com/txnkit/txn"
	"github.com/txnkit/txn/backends/txnsql"
	"github.com/txnkit/txn/internal/errchain"
	"modernc.org/sqlite"
)

// SQLite result codes used by Classify. Extended codes carry the primary
// code in their low byte.
const (
	// CodeBusy is SQLITE_BUSY: another connection holds a lock this one
	// needs.
	CodeBusy = 5
	// CodeLocked is SQLITE_LOCKED: a conflict inside one connection or
	// between connections sharing a cache.
	CodeLocked = 6
	// CodeBusyRecovery is SQLITE_BUSY_RECOVERY: another connection is
	// recovering the WAL.
	CodeBusyRecovery = CodeBusy | 1<<8
	// CodeBusySnapshot is SQLITE_BUSY_SNAPSHOT: a deferred transaction tried
	// to write on a snapshot that another connection has since overtaken.
	CodeBusySnapshot = CodeBusy | 2<<8
	// CodeBusyTimeout is SQLITE_BUSY_TIMEOUT: a blocking lock timed out.
	CodeBusyTimeout = CodeBusy | 3<<8
	// CodeLockedSharedCache is SQLITE_LOCKED_SHAREDCACHE: a table lock of a
	// shared cache is held by another connection.
	CodeLockedSharedCache = CodeLocked | 1<<8
	// CodeProtocol is SQLITE_PROTOCOL. SQLite's result-code documentation:
	// "currently only returned when using WAL mode and attempting to start
	// a new transaction", after a connection lost the race for the WAL
	// locks "dozens of times over a span of multiple seconds". Nothing of
	// the transaction has run.
	CodeProtocol = 15
)

// DefaultBusyTimeout is the busy_timeout Open sets.
const DefaultBusyTimeout = 5 * time.Second

// Runner is the Runner type this package builds.
type Runner = txn.Runner[*sql.Tx]

// sqlDriver is how txnsql sees this package.
func sqlDriver() txnsql.Driver {
	return txnsql.Driver{Name: "txnsqlite", Classify: Classify, BoundBegin: true, BeginWait: -1}
}

// busyTimeout returns db's busy_timeout, read from one of its connections,
// or -1 when it cannot be read.
func busyTimeout(db *sql.DB) time.Duration {
	if db == nil {
		return -1
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	var ms int64
	if err := db.QueryRowContext(ctx, "PRAGMA busy_timeout").Scan(&ms); err != nil || ms < 0 {
		return -1
	}
	return time.Duration(ms) * time.Millisecond
}

// New returns a Runner over db, a database opened with the driver of
// modernc.org/sqlite, that retries the errors Classify recognises
// (txn.WithClassifier replaces it). Begin options (Deferred, TxOptions) are
// given to Runner.WithBegin. A nil db yields a Runner whose Run returns
// txn.ErrNilRunner.
//
// New reads db's busy_timeout from one of its connections (PRAGMA
// busy_timeout), the longest a BEGIN IMMEDIATE waits for another
// connection's write lock, which no interrupt ends. A Run whose deadline
// comes sooner runs BEGIN on a goroutine of its own and returns at its
// deadline; any other Run's BEGIN costs no goroutine and returns within
// busy_timeout (so a context cancelled without a deadline may wait up to
// that long). When busy_timeout cannot be read, every Run whose context
// can end takes the goroutine.
func New(db *sql.DB, opts ...txn.RunnerOption) *Runner {
	d := sqlDriver()
	d.BeginWait = busyTimeout(db)
	return txnsql.NewRunner(db, d, opts...)
}

// TxOptions returns a begin option that sets the transactions'
// sql.TxOptions; give it to Runner.WithBegin. modernc.org/sqlite uses only
// ReadOnly, to choose between BEGIN and the DSN's _txlock (see Deferred).
func TxOptions(o sql.TxOptions) txn.BeginOption[*sql.Tx] {
	return sqlDriver().TxOptions(o)
}

// Classify returns ClassifyCode's class for the first *sqlite.Error in err's
// chain (txn.ClassRetryable for SQLITE_BUSY, SQLITE_LOCKED and
// SQLITE_PROTOCOL and their extended codes), and txn.ClassPermanent for
// every other error, including nil. It looks through wrapping (%w,
// errors.Join, any Unwrap() []error) and never panics: a typed nil in the
// chain, such as a nil *sqlite.Error wrapped with %w, is skipped as if
// absent, so an error holding only typed nils is permanent.
func Classify(err error) txn.Class {
	e, ok := errchain.As[*sqlite.Error](err)
	if !ok {
		return txn.ClassPermanent
	}
	return ClassifyCode(e.Code())
}

// ClassifyCode classifies an SQLite result code, primary or extended:
// txn.ClassRetryable for SQLITE_BUSY, SQLITE_LOCKED and SQLITE_PROTOCOL and
// their extended codes, txn.ClassPermanent for all others, and for values
// that are no SQLite result code (negative, or beyond 32 bits). It lets
// users of another SQLite driver build their classifier from this
// package's table.
func ClassifyCode(code int) txn.Class {
	if code < 0 || int64(code) > math.MaxInt32 {
		return txn.ClassPermanent
	}
	switch code & 0xff {
	case CodeBusy, CodeLocked, CodeProtocol:
		return txn.ClassRetryable
	}
	return txn.ClassPermanent
}

// Deferred is a begin option (give it to Runner.WithBegin) that makes the
// transactions begin with a plain, DEFERRED BEGIN even
// on a database whose DSN sets _txlock=immediate (as Open does). Use it for
// transactions that only read: they then take no write lock and, in WAL
// mode, run beside the writer. It passes sql.TxOptions{ReadOnly: true}, which
// modernc.org/sqlite uses only to choose the BEGIN statement: a write inside
// such a transaction is not refused, it just may fail with
// SQLITE_BUSY_SNAPSHOT and be retried.
func Deferred() txn.BeginOption[*sql.Tx] {
	return TxOptions(sql.TxOptions{ReadOnly: true})
}

// DSN returns the modernc.org/sqlite data source name Open uses for the
// database file at path: WAL journal, busy_timeout of DefaultBusyTimeout,
// synchronous=NORMAL (durable across application crashes; the last
// transactions may be lost on power failure, the usual trade-off in WAL
// mode), foreign keys enforced, and BEGIN IMMEDIATE for every transaction
// that is not read-only. It returns an error for an empty path, for
// ":memory:" (each pooled connection would get its own empty database) and
// for a path containing '?', which the driver would take for the start of
// the parameters.
func DSN(path string) (string, error) {
	switch {
	case path == "":
		return "", errors.New("txnsqlite: empty database path")
	case path == ":memory:" || strings.HasPrefix(path, "file::memory:"):
		return "", fmt.Errorf("txnsqlite: %q is an in-memory database; use a file (for tests, one in t.TempDir())", path)
	case strings.Contains(path, "?"):
		return "", fmt.Errorf("txnsqlite: path %q contains '?'; open it with sql.Open(\"sqlite\", dsn) and your own parameters", path)
	}
	q := url.Values{}
	q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", DefaultBusyTimeout.Milliseconds()))
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous(NORMAL)")
	q.Add("_pragma", "foreign_keys(1)")
	q.Set("_txlock", "immediate")
	return path + "?" + q.Encode(), nil
}

// Open opens (creating it if needed) the SQLite database file at path with
// the settings DSN describes and checks that it can be used. It returns the
// error of DSN, or of the first connection, wrapped.
func Open(path string) (*sql.DB, error) {
	dsn, err := DSN(path)
	if err != nil {
		return nil, err
	}
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("txnsqlite: open %s: %w", path, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), DefaultBusyTimeout+5*time.Second)
	defer cancel()
	if err := db.PingContext(ctx); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("txnsqlite: open %s: %w", path, err)
	}
	return db, nil
}
