package txnpgx_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/txnkit/txn"
	"github.com/txnkit/txn/backends/txnpgx"
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

// A fault forced before COMMIT or at COMMIT rolls back on the server what
// fn, a nested Run (a savepoint) and txn.Savepoint wrote: before the retry
// begins, another connection can write the same keys without waiting for a
// lock, and after it only the retry's rows exist.
func TestTxntestForcedFailureRollsBackOnServer(t *testing.T) {
	for _, at := range []txn.InterceptPoint{txn.InterceptBeforeCommit, txn.InterceptCommit} {
		t.Run(at.String(), func(t *testing.T) {
			ctx := testCtx(t)
			pool := newPool(t, nil)
			tbl := newTable(t, pool, "id int PRIMARY KEY, attempt int NOT NULL")
			r := txnpgx.New(pool, txn.WithBackoff(txn.Constant(0)))

			in := &probing{Faults: txntest.Fail(at, 1), probe: func(int) error {
				// Attempt 1's rows are gone and unlocked: inserting the
				// same keys from another connection does not wait.
				pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				defer cancel()
				if n := queryInt(t, pool, "SELECT count(*) FROM "+tbl); n != 0 {
					return fmt.Errorf("%d rows of the failed attempt are visible", n)
				}
				_, err := pool.Exec(pctx, "INSERT INTO "+tbl+" SELECT g, 0 FROM generate_series(1, 3) g")
				if err != nil {
					return fmt.Errorf("probe insert: %w", err)
				}
				_, err = pool.Exec(pctx, "DELETE FROM "+tbl)
				return err
			}}
			rec := &txntest.Recorder{}
			calls := 0
			err := r.WithInterceptor(in).Run(ctx, func(ctx context.Context, tx pgx.Tx) error {
				calls++
				n := calls
				if _, err := tx.Exec(ctx, "INSERT INTO "+tbl+" VALUES (1, $1)", n); err != nil {
					return err
				}
				// The application's Runner, nested: it joins through a savepoint.
				if err := r.Run(ctx, func(ctx context.Context, tx pgx.Tx) error {
					_, err := tx.Exec(ctx, "INSERT INTO "+tbl+" VALUES (2, $1)", n)
					return err
				}); err != nil {
					return err
				}
				if err := txn.Savepoint(ctx, func(ctx context.Context, tx pgx.Tx) error {
					_, err := tx.Exec(ctx, "INSERT INTO "+tbl+" VALUES (3, $1)", n)
					return err
				}); err != nil {
					return err
				}
				var inTx int
				if err := tx.QueryRow(ctx, "SELECT count(*) FROM "+tbl).Scan(&inTx); err != nil {
					return err
				}
				assert.Equal(t, 3, inTx, "the statements ran on the server")
				return nil
			}, txn.WithObserver(rec))
			require.NoError(t, err)
			assert.Equal(t, 2, calls)
			assert.Equal(t, 1, in.probed)
			assert.Equal(t, 3, queryInt(t, pool, "SELECT count(*) FROM "+tbl+" WHERE attempt = 2"))
			assert.Equal(t, 3, queryInt(t, pool, "SELECT count(*) FROM "+tbl))
			assert.Equal(t, "attempt 1, retry retryable, attempt 2, committed", rec.String())
		})
	}
}

// A fault after a real COMMIT surfaces as ErrCommitUnknown and does not
// run fn again, although the work is committed; an Idempotent call runs fn
// again.
func TestTxntestUnknownCommitOutcome(t *testing.T) {
	ctx := testCtx(t)
	pool := newPool(t, nil)
	tbl := newTable(t, pool, "id int PRIMARY KEY, v int NOT NULL, runs int NOT NULL")
	mustExec(t, pool, "INSERT INTO "+tbl+" VALUES (1, 0, 0)")
	faulty := txnpgx.New(pool, txn.WithBackoff(txn.Constant(0))).WithInterceptor(txntest.Fail(txn.InterceptAfterCommit, 1))
	calls := 0
	set7 := func(ctx context.Context, tx pgx.Tx) error {
		calls++
		_, err := tx.Exec(ctx, "UPDATE "+tbl+" SET v = 7, runs = runs + 1 WHERE id = 1")
		return err
	}

	rec := &txntest.Recorder{}
	err := faulty.Run(ctx, set7, txn.WithObserver(rec))
	require.ErrorIs(t, err, txn.ErrCommitUnknown)
	assert.Equal(t, 1, calls, "fn is not run again")
	assert.Equal(t, 1, queryInt(t, pool, "SELECT runs FROM "+tbl), "the COMMIT really happened")
	assert.Equal(t, "attempt 1, gave up ambiguous", rec.String())

	calls = 0
	rec.Reset()
	require.NoError(t, faulty.Run(ctx, set7, txn.Idempotent(), txn.WithObserver(rec)))
	assert.Equal(t, 2, calls, "an Idempotent call runs fn again")
	assert.Equal(t, 3, queryInt(t, pool, "SELECT runs FROM "+tbl), "both attempts committed")
	assert.Equal(t, 7, queryInt(t, pool, "SELECT v FROM "+tbl))
	assert.Equal(t, []txn.Class{txn.ClassAmbiguous}, rec.Classes())
}

// CheckRerun on PostgreSQL: a counter bumped inside fn fails the check, the
// same bump in OnCommit passes.
func TestTxntestCheckRerun(t *testing.T) {
	pool := newPool(t, nil)
	tbl := newTable(t, pool, "id int PRIMARY KEY")
	r := txnpgx.New(pool, txn.WithBackoff(txn.Constant(0)))
	checkRerunBuggyAndFixed(t, r, pool, tbl)
}

func checkRerunBuggyAndFixed(t *testing.T, r *txnpgx.Runner, pool *pgxpool.Pool, tbl string) {
	orders := 0
	type state struct{ Rows, Orders int }
	report := func(context.Context) state {
		return state{queryInt(t, pool, "SELECT count(*) FROM "+tbl), orders}
	}
	reset := txntest.Reset(func(ctx context.Context) error {
		orders = 0
		_, err := pool.Exec(ctx, "DELETE FROM "+tbl)
		return err
	})
	insert := func(ctx context.Context, tx pgx.Tx) error {
		_, err := tx.Exec(ctx, "INSERT INTO "+tbl+" VALUES (1)")
		return err
	}
	buggy := func(ctx context.Context, tx pgx.Tx) error {
		orders++
		return insert(ctx, tx)
	}
	fixed := func(ctx context.Context, tx pgx.Tx) error {
		if err := insert(ctx, tx); err != nil {
			return err
		}
		return txn.OnCommit(ctx, func() { orders++ })
	}
	err := txntest.Rerun(testCtx(t), r, buggy, report, reset)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "after attempt 1 failed before COMMIT and attempt 2 committed, report returned {Rows:1 Orders:2}; after a single attempt it returned {Rows:1 Orders:1}")
	txntest.CheckRerun(t, r, fixed, report, reset, txntest.Retries(3),
		txntest.At(txn.InterceptBegin, txn.InterceptBeforeCommit, txn.InterceptCommit))
}
