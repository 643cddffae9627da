package txnsqlite_test

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"modernc.org/sqlite"

	"github.com/txnkit/txn"
	"github.com/txnkit/txn/backends/txnsqlite"
	"github.com/txnkit/txn/internal/fakeclock"
)

// Tests of fn behaviours a careless or hostile user might produce, on a
// real SQLite database.

// openOneConn opens a fresh database whose pool holds a single connection,
// so that a transaction left open, or a connection not given back, makes
// the next Run wait (bounded by ctxT) instead of passing unnoticed.
func openOneConn(t *testing.T) *sql.DB {
	t.Helper()
	db, err := txnsqlite.Open(filepath.Join(t.TempDir(), "adversarial.db"))
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	db.SetMaxOpenConns(1)
	_, err = db.Exec("CREATE TABLE t (name TEXT PRIMARY KEY)")
	require.NoError(t, err)
	_, err = db.Exec("CREATE TABLE audit (name TEXT)")
	require.NoError(t, err)
	return db
}

func count(t *testing.T, db *sql.DB, table string) int {
	t.Helper()
	var n int
	require.NoError(t, db.QueryRow("SELECT count(*) FROM "+table).Scan(&n))
	return n
}

// TestAdversarialFnOutlivesDeadline: fn ignores its context and goes on
// past the deadline, writing with a context of its own, then returns nil or
// a retryable error. Run must not commit, must not run fn again, must not
// report an unknown outcome, and returns soon after fn does; the only
// connection is free again.
func TestAdversarialFnOutlivesDeadline(t *testing.T) {
	for name, ret := range map[string]error{"nil": nil, "Retry": txn.Retry(errors.New("stale version"))} {
		t.Run(name, func(t *testing.T) {
			db := openOneConn(t)
			r := txnsqlite.New(db)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
			defer cancel()
			calls := 0
			var lateErr error
			var fnReturned time.Time
			err := r.Run(ctx, func(ctx context.Context, tx *sql.Tx) error {
				calls++
				if err := insert(ctx, tx, "before"); err != nil {
					return err
				}
				<-ctx.Done() // "sleeps" past the deadline
				lateErr = insert(context.Background(), tx, "after")
				fnReturned = time.Now()
				return ret
			}, txn.Idempotent(), txn.Keys("k"))
			elapsed := time.Since(fnReturned)
			require.Error(t, err)
			assert.ErrorIs(t, err, context.DeadlineExceeded)
			assert.NotErrorIs(t, err, txn.ErrCommitUnknown)
			assert.NoError(t, lateErr, "the transaction outlives the caller's context until Run ends it")
			assert.Equal(t, 1, calls)
			assert.Less(t, elapsed, 5*time.Second, "Run did not return soon after fn")
			require.NoError(t, r.Run(ctxT(t), func(ctx context.Context, tx *sql.Tx) error { return insert(ctx, tx, "next") }, txn.Keys("k")))
			assert.Equal(t, []string{"next"}, rows(t, db))
		})
	}
}

// TestAdversarialGoexitReleasesConnection: fn writes, registers a callback
// and calls runtime.Goexit. The transaction is rolled back and its only
// connection given back: the next Run, with the same key, commits, and
// only its row is there.
func TestAdversarialGoexitReleasesConnection(t *testing.T) {
	db := openOneConn(t)
	r := txnsqlite.New(db)
	var cb atomic.Bool
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = r.Run(ctxT(t), func(ctx context.Context, tx *sql.Tx) error {
			if err := insert(ctx, tx, "lost"); err != nil {
				return err
			}
			if err := txn.OnCommit(ctx, func() { cb.Store(true) }); err != nil {
				return err
			}
			_ = txn.Savepoint(ctx, func(ctx context.Context, tx *sql.Tx) error {
				if err := insert(ctx, tx, "lost too"); err != nil {
					return err
				}
				runtime.Goexit()
				return nil
			})
			return nil
		}, txn.Keys("k"))
		t.Error("Run returned after fn's goroutine exited")
	}()
	<-done
	require.NoError(t, r.Run(ctxT(t), func(ctx context.Context, tx *sql.Tx) error { return insert(ctx, tx, "next") }, txn.Keys("k")))
	assert.Equal(t, []string{"next"}, rows(t, db))
	assert.False(t, cb.Load())
	st := r.AdmissionStats()
	assert.Zero(t, st.InFlight)
	assert.Zero(t, st.Keys)
}

// TestAdversarialCallbackRunsAgainOnOneConnection: an OnCommit callback runs
// two more Runs on the same Runner and key, with fn's ended context and
// with a fresh one, on a pool of one connection. The attempt has given
// back its connection, key and slot before the callbacks run, so both
// commit at once.
func TestAdversarialCallbackRunsAgainOnOneConnection(t *testing.T) {
	db := openOneConn(t)
	r := txnsqlite.New(db)
	var errs []error
	err := r.Run(ctxT(t), func(ctx context.Context, tx *sql.Tx) error {
		if err := insert(ctx, tx, "order"); err != nil {
			return err
		}
		return txn.OnCommit(ctx, func() {
			errs = append(errs,
				r.Run(ctx, func(ctx context.Context, tx *sql.Tx) error { return insert(ctx, tx, "audit 1") }, txn.Keys("k")),
				r.Run(ctxT(t), func(ctx context.Context, tx *sql.Tx) error { return insert(ctx, tx, "audit 2") }, txn.Keys("k")))
		})
	}, txn.Keys("k"))
	require.NoError(t, err)
	require.Len(t, errs, 2)
	assert.NoError(t, errs[0])
	assert.NoError(t, errs[1])
	assert.Equal(t, []string{"audit 1", "audit 2", "order"}, rows(t, db))
}

// TestAdversarialFreshRunInFnOnOneConnection: fn starts a Run on the same
// Runner with a fresh context, both naming the same key, on a pool of one
// connection (adaptive ceiling 1). The key and the slot, both held by the
// caller, let it through after the stall interval; the connection cannot,
// and the inner Run waits in the pool until its context ends. It must then
// return its context's error, write nothing, and leave the outer Run to
// commit and nothing held.
func TestAdversarialFreshRunInFnOnOneConnection(t *testing.T) {
	db := openOneConn(t)
	clk := fakeclock.New(time.Now())
	r := txnsqlite.New(db, txn.WithClock(clk))
	require.Equal(t, 1, r.AdmissionStats().Ceiling)
	innerCtx, cancelInner := context.WithCancel(context.Background())
	defer cancelInner()
	var innerErr error
	done := make(chan error, 1)
	go func() {
		done <- r.Run(ctxT(t), func(ctx context.Context, tx *sql.Tx) error {
			if err := insert(ctx, tx, "order"); err != nil {
				return err
			}
			innerErr = r.Run(innerCtx, func(ctx context.Context, tx *sql.Tx) error {
				_, err := tx.ExecContext(ctx, "INSERT INTO audit VALUES ('audit')")
				return err
			}, txn.Keys("k"))
			return nil
		}, txn.Keys("k"))
	}()
	// Let the stall escapes admit the inner Run past the key and the
	// slot, until it waits for the pool's only connection.
	deadline := time.Now().Add(20 * time.Second)
	for db.Stats().WaitCount == 0 {
		require.True(t, time.Now().Before(deadline), "the inner Run never reached the pool")
		clk.Advance(time.Minute)
		time.Sleep(time.Millisecond)
	}
	cancelInner()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(20 * time.Second):
		require.FailNow(t, "the outer Run did not return once the inner one gave up")
	}
	assert.ErrorIs(t, innerErr, context.Canceled)
	assert.Equal(t, []string{"order"}, rows(t, db))
	assert.Zero(t, count(t, db, "audit"))
	st := r.AdmissionStats()
	assert.Zero(t, st.InFlight)
	assert.Zero(t, st.Keys)
}

// TestAdversarialHandlesAcrossSavepoint: fn writes with the outer handle
// inside a Savepoint that then fails permanently (the write is undone with
// the savepoint), writes with the outer handle after it (committed), and
// keeps the handle of a released Savepoint and writes with it afterwards
// (it is the same transaction: committed once, with the rest).
func TestAdversarialHandlesAcrossSavepoint(t *testing.T) {
	db := openOneConn(t)
	r := txnsqlite.New(db)
	errSp := errors.New("savepoint fails")
	var spErr error
	err := r.Run(ctxT(t), func(ctx context.Context, tx *sql.Tx) error {
		spErr = txn.Savepoint(ctx, func(ctx context.Context, _ *sql.Tx) error {
			if err := insert(ctx, tx, "outer handle in failed savepoint"); err != nil {
				return err
			}
			return errSp
		})
		if err := insert(ctx, tx, "outer handle after"); err != nil {
			return err
		}
		var kept *sql.Tx
		if err := txn.Savepoint(ctx, func(ctx context.Context, sp *sql.Tx) error {
			kept = sp
			return insert(ctx, sp, "in released savepoint")
		}); err != nil {
			return err
		}
		return insert(ctx, kept, "kept savepoint handle after")
	})
	require.NoError(t, err)
	assert.Same(t, errSp, spErr)
	assert.Equal(t, []string{"in released savepoint", "kept savepoint handle after", "outer handle after"}, rows(t, db))
}

// TestAdversarialBareTypedNilDriverError: fn returns a nil *sqlite.Error
// as its error, unwrapped. Run classifies it without panicking, as a
// permanent error, after one attempt, and commits nothing.
func TestAdversarialBareTypedNilDriverError(t *testing.T) {
	db := openOneConn(t)
	r := txnsqlite.New(db)
	calls := 0
	var err error
	require.NotPanics(t, func() {
		err = r.Run(ctxT(t), func(ctx context.Context, tx *sql.Tx) error {
			calls++
			if err := insert(ctx, tx, "x"); err != nil {
				return err
			}
			return (*sqlite.Error)(nil)
		})
	})
	require.Error(t, err)
	assert.Equal(t, 1, calls)
	assert.Empty(t, rows(t, db))
}

// TestAdversarialContextKeptPastPanic: fn hands its context to a goroutine
// and panics; the caller recovers. The transaction was rolled back, so the
// context must carry none (as after a Run that returned): a Run on it
// starts a new transaction and commits.
func TestAdversarialContextKeptPastPanic(t *testing.T) {
	db := openOneConn(t)
	r := txnsqlite.New(db)
	var kept context.Context
	func() {
		defer func() { _ = recover() }()
		_ = r.Run(ctxT(t), func(ctx context.Context, tx *sql.Tx) error {
			kept = ctx
			panic("boom")
		})
	}()
	_, ok := txn.TxFrom[*sql.Tx](kept)
	assert.False(t, ok, "TxFrom finds the rolled-back transaction")
	err := r.Run(kept, func(ctx context.Context, tx *sql.Tx) error { return insert(ctx, tx, "late") })
	require.NoError(t, err)
	assert.Equal(t, []string{"late"}, rows(t, db))
}

// lostReplyOnce makes the first outermost commit of its view look
// unanswered: the COMMIT happened, its reply was lost on a dropped
// connection (driver.ErrBadConn, which database/sql drivers return).
type lostReplyOnce struct{ done atomic.Bool }

func (l *lostReplyOnce) Intercept(_ context.Context, at txn.InterceptPoint, _ int) error {
	if at == txn.InterceptAfterCommit && l.done.CompareAndSwap(false, true) {
		return driver.ErrBadConn
	}
	return nil
}

// TestAdversarialInnerUnknownCommitNotRerun: fn writes an audit row in a
// transaction of its own (a Run with a fresh context) and returns that
// Run's error. The audit commit happened but its reply was lost, so the
// inner Run returns an error matching ErrCommitUnknown. The outer Run must
// not run fn again (that writes the audit row twice) and must report the
// unknown outcome.
func TestAdversarialInnerUnknownCommitNotRerun(t *testing.T) {
	db := openOneConn(t)
	db.SetMaxOpenConns(2) // the inner transaction needs a connection of its own
	r := txnsqlite.New(db, txn.NoAdaptive())
	audit := r.WithInterceptor(&lostReplyOnce{})
	calls := 0
	var innerErrs []error
	err := r.WithBegin(txnsqlite.Deferred()).Run(ctxT(t), func(ctx context.Context, tx *sql.Tx) error {
		calls++
		if _, err := tx.ExecContext(ctx, "SELECT count(*) FROM t"); err != nil {
			return err
		}
		err := audit.Run(context.Background(), func(ctx context.Context, tx *sql.Tx) error {
			_, err := tx.ExecContext(ctx, "INSERT INTO audit VALUES ('audit')")
			return err
		})
		innerErrs = append(innerErrs, err)
		return err
	})
	require.NotEmpty(t, innerErrs)
	require.ErrorIs(t, innerErrs[0], txn.ErrCommitUnknown, "the inner Run reports its lost commit reply")
	assert.Equal(t, 1, calls, "fn ran again after its inner commit's outcome became unknown")
	assert.Equal(t, 1, count(t, db, "audit"), "the audit row was committed more than once")
	assert.ErrorIs(t, err, txn.ErrCommitUnknown)
}
