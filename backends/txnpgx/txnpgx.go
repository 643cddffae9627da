// Package txnpgx runs txn transactions on PostgreSQL (and on CockroachDB and
// YugabyteDB, which speak its protocol) through pgx v5.
//
// A Runner is built over a *pgxpool.Pool, a *pgx.Conn, or anything else
// that begins a pgx.Tx:
//
//	pool, _ := pgxpool.New(ctx, dsn)
//	r := txnpgx.New(pool).WithBegin(txnpgx.TxOptions(pgx.TxOptions{IsoLevel: pgx.Serializable}))
//	err := r.Run(ctx, func(ctx context.Context, tx pgx.Tx) error {
//		_, err := tx.Exec(ctx, "UPDATE accounts SET balance = balance - 10 WHERE id = $1", 1)
//		return err
//	})
//
// Errors are classified by Classify: serialization failures (40001) and
// deadlocks (40P01) re-run fn in a fresh transaction, a lost connection is
// retried only when nothing can have been committed, and a connection lost
// while COMMIT was in flight makes Run return an error matching
// txn.ErrCommitUnknown. Lock-wait failures (55P03) and cancelled statements
// (57014) are retried only when asked for, with
// txn.WithClassifier(Classifier(ClassifyOptions{...})).
//
// Savepoints use pgx's nested transactions (tx.Begin), so txn.Savepoint and a
// Run nested in fn work; a serialization failure inside a savepoint still
// restarts the whole transaction, since PostgreSQL's snapshot belongs to the
// outer one.
package txnpgx

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/txnkit/txn"
	"github.com/txnkit/txn/internal/errchain"
)

// Beginner begins pgx transactions. *pgxpool.Pool and *pgx.Conn implement
// it.
type Beginner interface {
	BeginTx(ctx context.Context, txOptions pgx.TxOptions) (pgx.Tx, error)
}

// Runner is the Runner type this package builds.
type Runner = txn.Runner[pgx.Tx]

// New returns a Runner over db that classifies errors with Classify
// (txn.WithClassifier replaces it, typically with
// Classifier(ClassifyOptions{...}) or a function that wraps Classify; what
// it leaves permanent is still checked against the connection rules of
// Classify, so that a connection lost during COMMIT is never mistaken for a
// definite failure). A *pgxpool.Pool gives every attempt a connection from
// the pool; a *pgx.Conn runs every attempt on that one connection (if it
// dies, Run stops instead of retrying on a closed connection). A nil db, or
// a typed nil pointer, yields a Runner whose Run returns txn.ErrNilRunner.
func New(db Beginner, opts ...txn.RunnerOption) *Runner {
	if errchain.IsNil(db) {
		return txn.New[pgx.Tx](nil, opts...)
	}
	return txn.New[pgx.Tx](&backend{db: db}, opts...)
}

// TxOptions returns a begin option that sets the isolation level, access
// mode and deferrable mode of the transactions (and, for CockroachDB,
// BeginQuery such as "BEGIN PRIORITY HIGH"); give it to Runner.WithBegin.
// When several are given, the last wins.
func TxOptions(o pgx.TxOptions) txn.BeginOption[pgx.Tx] {
	return txn.NewBeginOption[pgx.Tx](backendName, o)
}

// backendName marks this package's begin options.
const backendName = "txnpgx"

// backend adapts a Beginner to txn.Backend and txn.Savepointer.
type backend struct {
	db Beginner
	// noLockTimeout is set once the server refused a transaction-local
	// lock_timeout (BeginBoundedWait).
	noLockTimeout atomic.Bool
}

var (
	_ txn.Backend[pgx.Tx]         = (*backend)(nil)
	_ txn.ConnClassifier          = (*backend)(nil)
	_ txn.Savepointer[pgx.Tx]     = (*backend)(nil)
	_ txn.PoolSizer               = (*backend)(nil)
	_ txn.KeyLocker[pgx.Tx]       = (*backend)(nil)
	_ txn.LockWaitBounder[pgx.Tx] = (*backend)(nil)
)

// PoolSize returns the pool's MaxConns for a *pgxpool.Pool, 1 for a
// *pgx.Conn, and 0 (unknown) for any other Beginner.
func (b *backend) PoolSize() int {
	switch db := b.db.(type) {
	case *pgxpool.Pool:
		return int(db.Config().MaxConns)
	case *pgx.Conn:
		return 1
	}
	return 0
}

// BeginLocked takes one advisory lock per key, on the key's 64-bit FNV-1a
// hash, in ascending order of the hashes so that every process takes a
// common set in the same order, then begins the transaction. Over a
// *pgxpool.Pool or a *pgx.Conn the locks are first session locks
// (pg_advisory_lock) taken on the attempt's connection before BEGIN, so
// that a REPEATABLE READ or SERIALIZABLE transaction takes its snapshot
// only once it holds its keys (a lock taken inside the transaction would
// come after the snapshot, and the first write after the wait would fail
// with 40001); the transaction's first statement then takes the same locks
// again at transaction level (granted at once: the session holds them)
// and releases the session locks, so that PostgreSQL itself releases the
// keys as the transaction commits or rolls back, with no statement of
// ours after it. All of it travels with BEGIN in one query
// (lockThenBegin). Over any other Beginner the locks are transaction locks
// (pg_advisory_xact_lock) taken right after BEGIN. If a lock cannot be
// taken (ctx ended, the connection failed) everything taken is released
// and the error returned; a pooled connection on which that release fails
// is closed instead of returned to the pool.
func (b *backend) BeginLocked(ctx context.Context, opts []txn.BeginOption[pgx.Tx], keys []string) (pgx.Tx, func(context.Context), error) {
	o, err := txOptionsOf(opts)
	if err != nil {
		return nil, nil, err
	}
	var (
		conn *pgx.Conn
		done func(ctx context.Context, broken bool)
	)
	switch db := b.db.(type) {
	case *pgxpool.Pool:
		pc, err := db.Acquire(ctx)
		if err != nil {
			return nil, nil, err
		}
		conn = pc.Conn()
		done = func(ctx context.Context, broken bool) {
			if broken {
				_ = pc.Hijack().Close(ctx)
				return
			}
			pc.Release()
		}
	case *pgx.Conn:
		conn = db
		done = func(context.Context, bool) {}
	default:
		return b.beginXactLocked(ctx, o, keys)
	}
	fail := func(err error) (pgx.Tx, func(context.Context), error) {
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), txn.DefaultRollbackTimeout)
		defer cancel()
		_, uerr := conn.Exec(uctx, "SELECT pg_catalog.pg_advisory_unlock_all()")
		done(uctx, uerr != nil)
		return nil, nil, err
	}
	if st := conn.PgConn().TxStatus(); st != 'I' {
		// lockThenBegin ends the implicit transaction of its locks with
		// COMMIT, which on a connection inside a transaction would commit
		// that one.
		done(ctx, false)
		return nil, nil, txn.Permanent(fmt.Errorf("txnpgx: DatabaseKeys: the connection is already in a transaction (status %q)", st))
	}
	o.BeginQuery = lockThenBegin(KeyHashes(keys), o)
	tx, err := conn.BeginTx(ctx, o)
	if err != nil {
		return fail(fmt.Errorf("txnpgx: advisory lock for a conflict key, then BEGIN: %w", err))
	}
	if st := conn.PgConn().TxStatus(); st != 'T' {
		// A BeginQuery of the caller's own that did not open a
		// transaction: the transaction-level locks would already be gone.
		_ = tx.Rollback(ctx)
		return fail(txn.Permanent(fmt.Errorf("txnpgx: DatabaseKeys: the begin query %q left the connection outside a transaction (status %q)", o.BeginQuery, st)))
	}
	// The keys are transaction locks now: COMMIT or ROLLBACK releases
	// them, and a connection that breaks releases them with its session.
	return tx, func(ctx context.Context) { done(ctx, false) }, nil
}

// lockThenBegin returns the query that takes the session advisory locks on
// hashes, begins the transaction o describes, and moves the locks into it,
// in one round trip: pgx sends a query without arguments over the simple
// protocol, which runs several statements. The session locks are taken in
// an implicit transaction of their own, which COMMIT ends (session locks
// outlive it; SET LOCAL keeps COMMIT's "no transaction in progress"
// warning from reaching the client's notice handler, and the session's
// lock_timeout and statement_timeout from ending the wait for a key, which
// only ctx bounds, as it bounds a wait for a key in the process; the
// settings are the session's again from BEGIN on), so that BEGIN starts
// a fresh transaction whose snapshot is taken by its first statement,
// after every lock was granted. That statement takes each lock again at
// transaction level and releases the session's hold on it, leaving the
// transaction as its only holder (PostgreSQL evaluates a select list's
// calls in the order written, so the key is never free in between). One
// statement takes all the session locks, in the array's order (unnest's
// function scan yields them so), so that a Run waits for its second key
// without a round trip after its first is granted. The functions are named with their schema, so that no
// search_path can put others in their place. The hashes are integers
// written by strconv; nothing of the keys' text reaches the query.
func lockThenBegin(hashes []int64, o pgx.TxOptions) string {
	var arr strings.Builder
	arr.WriteString("unnest('{")
	for i, h := range hashes {
		if i > 0 {
			arr.WriteByte(',')
		}
		arr.WriteString(strconv.FormatInt(h, 10))
	}
	arr.WriteString("}'::bigint[]) AS k")
	var b strings.Builder
	b.WriteString("SET LOCAL client_min_messages = error; SET LOCAL lock_timeout = 0; SET LOCAL statement_timeout = 0; SELECT pg_catalog.pg_advisory_lock(k) FROM ")
	b.WriteString(arr.String())
	b.WriteString("; COMMIT; ")
	writeBegin(&b, o)
	b.WriteString("; SELECT pg_catalog.pg_advisory_xact_lock(k), pg_catalog.pg_advisory_unlock(k) FROM ")
	b.WriteString(arr.String())
	return b.String()
}

// writeBegin writes the statement that begins a transaction with o, as pgx
// would send it.
func writeBegin(b *strings.Builder, o pgx.TxOptions) {
	if o.BeginQuery != "" {
		b.WriteString(o.BeginQuery)
		return
	}
	b.WriteString("BEGIN")
	if o.IsoLevel != "" {
		b.WriteString(" ISOLATION LEVEL ")
		b.WriteString(string(o.IsoLevel))
	}
	if o.AccessMode != "" {
		b.WriteByte(' ')
		b.WriteString(string(o.AccessMode))
	}
	if o.DeferrableMode != "" {
		b.WriteByte(' ')
		b.WriteString(string(o.DeferrableMode))
	}
}

// beginXactLocked begins a transaction and takes transaction-level
// advisory locks on keys' hashes.
func (b *backend) beginXactLocked(ctx context.Context, o pgx.TxOptions, keys []string) (pgx.Tx, func(context.Context), error) {
	tx, err := b.begin(ctx, o)
	if err != nil {
		return nil, nil, err
	}
	for _, h := range KeyHashes(keys) {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", h); err != nil {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), txn.DefaultRollbackTimeout)
			_ = tx.Rollback(rctx)
			cancel()
			return nil, nil, fmt.Errorf("txnpgx: advisory lock for a conflict key: %w", err)
		}
	}
	return tx, nil, nil
}

// KeyHashes returns the advisory-lock numbers that a Runner built with
// txn.DatabaseKeys takes for keys: each key's 64-bit FNV-1a hash, as a
// signed bigint, sorted ascending and without duplicates. SQL of your own
// that must serialize with those Runners can take the same locks with
// pg_advisory_xact_lock.
func KeyHashes(keys []string) []int64 {
	hs := make([]int64, 0, len(keys))
	for _, k := range keys {
		h := fnv.New64a()
		h.Write([]byte(k))
		hs = append(hs, int64(h.Sum64()))
	}
	slices.Sort(hs)
	return slices.Compact(hs)
}

// Begin starts a transaction with the options set by TxOptions.
func (b *backend) Begin(ctx context.Context, opts []txn.BeginOption[pgx.Tx]) (pgx.Tx, error) {
	o, err := txOptionsOf(opts)
	if err != nil {
		return nil, err
	}
	return b.begin(ctx, o)
}

// txOptionsOf returns the pgx.TxOptions of the last option in opts.
func txOptionsOf(opts []txn.BeginOption[pgx.Tx]) (pgx.TxOptions, error) {
	var o pgx.TxOptions
	for _, opt := range opts {
		v, ok := opt.Value().(pgx.TxOptions)
		if opt.Backend() != backendName || !ok {
			return o, fmt.Errorf("%w: a begin option built by %s (carrying %T) was given to a txnpgx Runner; use txnpgx.TxOptions",
				txn.ErrBadOption, opt.Backend(), opt.Value())
		}
		o = v
	}
	return o, nil
}

// BeginBoundedWait begins a transaction as Begin does, with a
// transaction-local lock_timeout of wait (at least 1 ms), sent with BEGIN
// in one query: the Runner begins so the probes of its adaptive limit,
// whose lock waits would otherwise end, in a deadlock, only after the
// server's deadlock_timeout. The setting replaces the session's
// lock_timeout for this transaction only; fn may still set its own. A
// server that refuses the setting (a database that speaks PostgreSQL's
// protocol without it) makes this and every later call a plain Begin.
func (b *backend) BeginBoundedWait(ctx context.Context, opts []txn.BeginOption[pgx.Tx], wait time.Duration) (pgx.Tx, error) {
	o, err := txOptionsOf(opts)
	if err != nil {
		return nil, err
	}
	if b.noLockTimeout.Load() {
		return b.begin(ctx, o)
	}
	var q strings.Builder
	writeBegin(&q, o)
	q.WriteString("; SET LOCAL lock_timeout = ")
	q.WriteString(strconv.FormatInt(max(1, wait.Milliseconds()), 10))
	bounded := o
	bounded.BeginQuery = q.String()
	tx, err := b.begin(ctx, bounded)
	var pgErr *pgconn.PgError
	if err != nil && errors.As(err, &pgErr) && (pgErr.Code == "42704" || pgErr.Code == "42601" || pgErr.Code == "0A000") {
		// 42704 unrecognized configuration parameter, 42601 syntax
		// error, 0A000 feature not supported: not PostgreSQL's SET.
		b.noLockTimeout.Store(true)
		return b.begin(ctx, o)
	}
	return tx, err
}

// LockWaitExpired reports whether err is the 55P03 of a lock wait that
// reached lock_timeout, as opposed to the 55P03 of NOWAIT, which found a
// row or table locked and did not wait. PostgreSQL raises the first from
// its ProcessInterrupts routine (so it is recognised whatever the
// server's lc_messages), as "canceling statement due to lock timeout";
// servers that speak its protocol are recognised by that message.
func (b *backend) LockWaitExpired(err error) bool {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "55P03" {
		return false
	}
	return pgErr.Routine == "ProcessInterrupts" || strings.Contains(pgErr.Message, "lock timeout")
}

// begin begins a transaction with o.
func (b *backend) begin(ctx context.Context, o pgx.TxOptions) (pgx.Tx, error) {
	tx, err := b.db.BeginTx(ctx, o)
	if err != nil {
		if c, ok := b.db.(*pgx.Conn); ok && c.IsClosed() {
			// Retrying on a single dead connection can only fail again.
			return nil, txn.Permanent(fmt.Errorf("txnpgx: begin on a closed *pgx.Conn: %w", err))
		}
		return nil, err
	}
	return tx, nil
}

// Commit commits tx. An error that carries no answer from the server (the
// connection failed or the context ended after COMMIT may have been sent)
// is marked so that Classify reports txn.ClassConnLost for it, which Run
// treats as an unknown outcome.
func (b *backend) Commit(ctx context.Context, tx pgx.Tx) error {
	err := tx.Commit(ctx)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, pgx.ErrTxClosed):
		return fmt.Errorf("%w: %w", txn.ErrTxDone, err)
	case errors.Is(err, pgx.ErrTxCommitRollback):
		// The server answered ROLLBACK: an earlier statement failed and fn
		// went on. The outcome is known, the cause is not.
		return fmt.Errorf("txnpgx: commit: %w", err)
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) || pgconn.SafeToRetry(err) {
		// The server answered, or nothing was sent.
		return err
	}
	return &commitInterruptedError{err: err}
}

// Rollback rolls tx back.
func (b *backend) Rollback(ctx context.Context, tx pgx.Tx) error {
	return txDone(tx.Rollback(ctx))
}

// Classify applies Classify, which includes the connection rules.
func (b *backend) Classify(err error) txn.Class { return Classify(err) }

// ClassifyConn applies the connection rules alone; the Runner uses it to
// complete a classifier given with txn.WithClassifier.
func (b *backend) ClassifyConn(err error) txn.Class { return classifyConn(err) }

// BeginSavepoint starts a pgx nested transaction (SAVEPOINT). pgx names the
// savepoint itself; name is not used.
func (b *backend) BeginSavepoint(ctx context.Context, tx pgx.Tx, _ string) (pgx.Tx, error) {
	sp, err := tx.Begin(ctx)
	if err != nil {
		return nil, txDone(err)
	}
	return sp, nil
}

// ReleaseSavepoint commits the nested transaction (RELEASE SAVEPOINT).
func (b *backend) ReleaseSavepoint(ctx context.Context, sp pgx.Tx, _ string) error {
	return txDone(sp.Commit(ctx))
}

// RollbackToSavepoint rolls the nested transaction back (ROLLBACK TO
// SAVEPOINT), leaving the enclosing transaction usable.
func (b *backend) RollbackToSavepoint(ctx context.Context, sp pgx.Tx, _ string) error {
	return txDone(sp.Rollback(ctx))
}

// txDone wraps pgx.ErrTxClosed with txn.ErrTxDone.
func txDone(err error) error {
	if errors.Is(err, pgx.ErrTxClosed) {
		return fmt.Errorf("%w: %w", txn.ErrTxDone, err)
	}
	return err
}

// commitInterruptedError is a COMMIT that failed without an answer from the
// server, after the command may have been sent.
type commitInterruptedError struct{ err error }

func (e *commitInterruptedError) Error() string {
	return "txnpgx: commit interrupted, outcome unknown: " + e.err.Error()
}

func (e *commitInterruptedError) Unwrap() error { return e.err }
