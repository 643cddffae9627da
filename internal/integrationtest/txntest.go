package integrationtest

import (
	"context"
	"database/sql"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/txnkit/txn"
	"github.com/txnkit/txn/txntest"
)

// probing is an Interceptor that runs probe before the BEGIN of every
// attempt after the first, then defers to the Faults.
type probing struct {
	*txntest.Faults
	mu     sync.Mutex
	probe  func(attempt int) error
	probed int
}

func (p *probing) Intercept(ctx context.Context, at txn.InterceptPoint, attempt int) error {
	if at == txn.InterceptBegin && attempt > 1 {
		if err := p.probe(attempt); err != nil {
			return txn.Permanent(err)
		}
		p.mu.Lock()
		p.probed++
		p.mu.Unlock()
	}
	return p.Faults.Intercept(ctx, at, attempt)
}

// TxntestForcedFailureRollsBack forces, with txntest.Fail, a failure at
// at (before COMMIT or at COMMIT) of the first attempt of a Run whose fn
// writes, in a nested Run (a savepoint) and in txn.Savepoint: the database
// rolled all of it back. Before the retry begins, another connection sees
// none of it and writes the same keys without waiting for a lock; after
// it only the retry's rows exist.
func TxntestForcedFailureRollsBack[T any](t *testing.T, db DB[T], prefix string, at txn.InterceptPoint) {
	ctx := Context(t)
	tbl := CreateTable(t, db, prefix, "id INT PRIMARY KEY, attempt INT NOT NULL")
	r := db.Runner(txn.WithBackoff(txn.Constant(0)))
	in := &probing{Faults: txntest.Fail(at, 1), probe: func(int) error {
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if n := oneInt(t, pctx, db, "SELECT COUNT(*) FROM "+tbl); n != 0 {
			return fmt.Errorf("%d rows of the failed attempt are visible", n)
		}
		if err := db.Exec(pctx, "INSERT INTO "+tbl+" VALUES (1, 0), (2, 0), (3, 0)"); err != nil {
			return fmt.Errorf("probe insert: %w", err)
		}
		return db.Exec(pctx, "DELETE FROM "+tbl)
	}}
	rec := &txntest.Recorder{}
	calls := 0
	err := r.WithInterceptor(in).Run(ctx, func(ctx context.Context, tx T) error {
		calls++
		n := calls
		if err := db.TxExec(ctx, tx, "INSERT INTO "+tbl+" VALUES (1, ?)", n); err != nil {
			return err
		}
		// The application's Runner, nested: it joins through a savepoint.
		if err := r.Run(ctx, func(ctx context.Context, tx T) error {
			return db.TxExec(ctx, tx, "INSERT INTO "+tbl+" VALUES (2, ?)", n)
		}); err != nil {
			return err
		}
		if err := txn.Savepoint(ctx, func(ctx context.Context, tx T) error {
			return db.TxExec(ctx, tx, "INSERT INTO "+tbl+" VALUES (3, ?)", n)
		}); err != nil {
			return err
		}
		inTx, err := db.TxInt(ctx, tx, "SELECT COUNT(*) FROM "+tbl)
		if err != nil {
			return err
		}
		assert.Equal(t, 3, inTx, "the statements ran in the database")
		return nil
	}, txn.WithObserver(rec))
	require.NoError(t, err)
	assert.Equal(t, 2, calls)
	assert.Equal(t, 1, in.probed)
	assert.Equal(t, 3, oneInt(t, ctx, db, "SELECT COUNT(*) FROM "+tbl+" WHERE attempt = 2"))
	assert.Equal(t, 3, oneInt(t, ctx, db, "SELECT COUNT(*) FROM "+tbl))
	assert.Equal(t, "attempt 1, retry retryable, attempt 2, committed", rec.String())
}

// TxntestUnknownCommitOutcome forces a failure after a real COMMIT: it
// surfaces as txn.ErrCommitUnknown and fn does not run again, although the
// work is committed; an Idempotent call runs fn again.
func TxntestUnknownCommitOutcome[T any](t *testing.T, db DB[T], prefix string) {
	ctx := Context(t)
	tbl := CreateTable(t, db, prefix, "id INT PRIMARY KEY, v INT NOT NULL, runs INT NOT NULL")
	require.NoError(t, db.Exec(ctx, "INSERT INTO "+tbl+" VALUES (1, 0, 0)"))
	faulty := db.Runner(txn.WithBackoff(txn.Constant(0))).WithInterceptor(txntest.Fail(txn.InterceptAfterCommit, 1))
	calls := 0
	set7 := func(ctx context.Context, tx T) error {
		calls++
		return db.TxExec(ctx, tx, "UPDATE "+tbl+" SET v = 7, runs = runs + 1 WHERE id = 1")
	}

	rec := &txntest.Recorder{}
	err := faulty.Run(ctx, set7, txn.WithObserver(rec))
	require.ErrorIs(t, err, txn.ErrCommitUnknown)
	assert.Equal(t, 1, calls, "fn is not run again")
	assert.Equal(t, 1, oneInt(t, ctx, db, "SELECT runs FROM "+tbl), "the COMMIT really happened")
	assert.Equal(t, "attempt 1, gave up ambiguous", rec.String())

	calls = 0
	rec.Reset()
	require.NoError(t, faulty.Run(ctx, set7, txn.Idempotent(), txn.WithObserver(rec)))
	assert.Equal(t, 2, calls, "an Idempotent call runs fn again")
	assert.Equal(t, 3, oneInt(t, ctx, db, "SELECT runs FROM "+tbl), "both attempts committed")
	assert.Equal(t, 7, oneInt(t, ctx, db, "SELECT v FROM "+tbl))
	assert.Equal(t, []txn.Class{txn.ClassAmbiguous}, rec.Classes())
}

// TxntestCheckRerun: a counter bumped inside fn fails txntest's rerun
// check, the same bump in OnCommit passes.
func TxntestCheckRerun[T any](t *testing.T, db DB[T], prefix string) {
	tbl := CreateTable(t, db, prefix, "id INT PRIMARY KEY")
	r := db.Runner(txn.WithBackoff(txn.Constant(0)))
	orders := 0
	type state struct{ Rows, Orders int }
	report := func(ctx context.Context) state { return state{oneInt(t, ctx, db, "SELECT COUNT(*) FROM "+tbl), orders} }
	reset := txntest.Reset(func(ctx context.Context) error {
		orders = 0
		return db.Exec(ctx, "DELETE FROM "+tbl)
	})
	insert := func(ctx context.Context, tx T) error {
		return db.TxExec(ctx, tx, "INSERT INTO "+tbl+" VALUES (1)")
	}
	buggy := func(ctx context.Context, tx T) error {
		orders++
		return insert(ctx, tx)
	}
	fixed := func(ctx context.Context, tx T) error {
		if err := insert(ctx, tx); err != nil {
			return err
		}
		return txn.OnCommit(ctx, func() { orders++ })
	}
	err := txntest.Rerun(Context(t), r, buggy, report, reset)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "after attempt 1 failed before COMMIT and attempt 2 committed, report returned {Rows:1 Orders:2}; after a single attempt it returned {Rows:1 Orders:1}")
	txntest.CheckRerun(t, r, fixed, report, reset, txntest.Retries(3),
		txntest.At(txn.InterceptBegin, txn.InterceptBeforeCommit, txn.InterceptCommit))
}

// Txntest runs the txntest scenarios above as subtests of t.
func Txntest[T any](t *testing.T, db DB[T], prefix string) {
	for _, at := range []txn.InterceptPoint{txn.InterceptBeforeCommit, txn.InterceptCommit} {
		t.Run("ForcedFailureRollsBack/"+at.String(), func(t *testing.T) { TxntestForcedFailureRollsBack(t, db, prefix, at) })
	}
	t.Run("UnknownCommitOutcome", func(t *testing.T) { TxntestUnknownCommitOutcome(t, db, prefix) })
	t.Run("CheckRerun", func(t *testing.T) { TxntestCheckRerun(t, db, prefix) })
}

// SQLDB is DB over a *sql.DB and a Runner of *sql.Tx, for the backends
// built on txnsql (txnmysql, txnsqlite). Queries keep their '?'
// placeholders.
type SQLDB struct {
	// D describes the database.
	D Dialect
	// DB is the pool.
	DB *sql.DB
	// New builds the backend's Runner over DB; Options its begin options.
	New     func(db *sql.DB, opts ...txn.RunnerOption) *txn.Runner[*sql.Tx]
	Options func(o sql.TxOptions) txn.BeginOption[*sql.Tx]
}

var _ DB[*sql.Tx] = (*SQLDB)(nil)

// Dialect returns s.D.
func (s *SQLDB) Dialect() Dialect { return s.D }

// Runner returns s.New(s.DB, opts...).
func (s *SQLDB) Runner(opts ...txn.RunnerOption) *txn.Runner[*sql.Tx] { return s.New(s.DB, opts...) }

// TxOptions returns s.Options(o).
func (s *SQLDB) TxOptions(o sql.TxOptions) txn.BeginOption[*sql.Tx] { return s.Options(o) }

// Exec runs a statement on the pool.
func (s *SQLDB) Exec(ctx context.Context, q string, args ...any) error {
	_, err := s.DB.ExecContext(ctx, q, args...)
	return err
}

// Ints runs a query of one integer column on the pool.
func (s *SQLDB) Ints(ctx context.Context, q string, args ...any) ([]int, error) {
	return ScanAll[int](s.DB.QueryContext(ctx, q, args...))
}

// Strings runs a query of one text column on the pool.
func (s *SQLDB) Strings(ctx context.Context, q string, args ...any) ([]string, error) {
	return ScanAll[string](s.DB.QueryContext(ctx, q, args...))
}

// TxExec runs a statement on tx.
func (s *SQLDB) TxExec(ctx context.Context, tx *sql.Tx, q string, args ...any) error {
	_, err := tx.ExecContext(ctx, q, args...)
	return err
}

// TxInt runs a query of one integer on tx.
func (s *SQLDB) TxInt(ctx context.Context, tx *sql.Tx, q string, args ...any) (int, error) {
	var n int
	err := tx.QueryRowContext(ctx, q, args...).Scan(&n)
	return n, err
}

// Begin begins a transaction on the pool.
func (s *SQLDB) Begin(ctx context.Context) (*sql.Tx, error) { return s.DB.BeginTx(ctx, nil) }

// Commit commits tx.
func (s *SQLDB) Commit(tx *sql.Tx) error { return tx.Commit() }

// Rollback rolls tx back.
func (s *SQLDB) Rollback(tx *sql.Tx) { _ = tx.Rollback() }

// ConnsInUse returns the pool's connections in use.
func (s *SQLDB) ConnsInUse() int { return s.DB.Stats().InUse }
