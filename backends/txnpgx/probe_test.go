package txnpgx_test

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/txnkit/txn"
	"github.com/txnkit/txn/backends/txnpgx"
	"github.com/txnkit/txn/internal/integrationtest"
)

// probePool is a pool of 4 connections at the server's own
// deadlock_timeout (1 s unless the server says otherwise).
func probePool(t *testing.T) *pgxpool.Pool {
	cfg, err := pgxpool.ParseConfig(pgDSN())
	require.NoError(t, err)
	cfg.MaxConns = 4
	return newPool(t, cfg)
}

// contend makes r contended, as a storm would: one Run conflicts once (a
// cut, to a limit of 1) and commits on its retry, and another commits at
// once, which raises the limit to 2 (below the pool's 4): the next attempt
// admitted beside a running one is a probe.
func contend(t *testing.T, r *txnpgx.Runner, tbl string) {
	tries := 0
	require.NoError(t, r.Run(testCtx(t), func(ctx context.Context, tx pgx.Tx) error {
		if tries++; tries == 1 {
			return txn.Retry(errors.New("a conflict"))
		}
		_, err := tx.Exec(ctx, "SELECT v FROM "+tbl+" WHERE id = 1")
		return err
	}))
	require.NoError(t, r.Run(testCtx(t), func(ctx context.Context, tx pgx.Tx) error {
		_, err := tx.Exec(ctx, "SELECT v FROM "+tbl+" WHERE id = 1")
		return err
	}))
}

// holdBeside starts a Run on r that runs first (when not nil) and then
// holds its transaction open; it returns once that Run is inside fn, with
// release, which lets the Run commit and waits for it (once; later calls
// do nothing). A Run started meanwhile on a contended r is admitted beside
// it, as a probe.
func holdBeside(t *testing.T, r *txnpgx.Runner, first func(context.Context, pgx.Tx) error) (release func()) {
	finish := integrationtest.Hold(t, testCtx(t), r, first)
	return func() { assert.NoError(t, finish()) }
}

// A probe of the adaptive limit that deadlocks with the attempt running
// before it (which is not bounded) gives up its lock wait at its bound, long before PostgreSQL
// looks for the deadlock: the probe fails with 55P03, the other attempt
// goes on and commits, and the probe runs again and commits. Nothing ends
// with 40P01, and both transfers are applied once.
func TestProbeDeadlockEndsAtItsBound(t *testing.T) {
	pool := probePool(t)
	tbl := newTable(t, pool, "id int PRIMARY KEY, v int NOT NULL")
	mustExec(t, pool, "INSERT INTO "+tbl+" VALUES (1, 0), (2, 0)")
	rec := &recorder{}
	r := txnpgx.New(pool, txn.WithObserver(rec))
	contend(t, r, tbl)
	rec.mu.Lock()
	rec.retries = nil // contend's own
	rec.mu.Unlock()

	ctx := testCtx(t)
	aLocked, bLocked := make(chan struct{}), make(chan struct{})
	var aTries, bTries int
	var wg sync.WaitGroup
	var aErr, bErr error
	wg.Add(1)
	go func() { // A: row 1, then row 2; admitted first, running alone: not bounded
		defer wg.Done()
		aErr = r.Run(ctx, func(ctx context.Context, tx pgx.Tx) error {
			aTries++
			if _, err := tx.Exec(ctx, "UPDATE "+tbl+" SET v = v + 1 WHERE id = 1"); err != nil {
				return err
			}
			if aTries == 1 {
				close(aLocked)
				<-bLocked
			}
			_, err := tx.Exec(ctx, "UPDATE "+tbl+" SET v = v + 10 WHERE id = 2")
			return err
		})
	}()
	<-aLocked
	wg.Add(1)
	go func() { // B: row 2, then row 1; admitted beside A, a probe
		defer wg.Done()
		bErr = r.Run(ctx, func(ctx context.Context, tx pgx.Tx) error {
			bTries++
			if _, err := tx.Exec(ctx, "UPDATE "+tbl+" SET v = v + 100 WHERE id = 2"); err != nil {
				return err
			}
			if bTries == 1 {
				close(bLocked)
			}
			_, err := tx.Exec(ctx, "UPDATE "+tbl+" SET v = v + 1000 WHERE id = 1")
			return err
		})
	}()
	wg.Wait()
	require.NoError(t, aErr)
	require.NoError(t, bErr)
	assert.Equal(t, 1, aTries, "the unbounded attempt went on")
	assert.Equal(t, 2, bTries, "the probe ran again")
	assert.Equal(t, []string{"55P03"}, rec.retryCodes(), "the probe's lock wait ended at its bound; no deadlock was waited out")
	assert.Equal(t, 1001, queryInt(t, pool, "SELECT v FROM "+tbl+" WHERE id = 1"))
	assert.Equal(t, 110, queryInt(t, pool, "SELECT v FROM "+tbl+" WHERE id = 2"))
}

// The probe's bound is the transaction's own: the session's lock_timeout
// is what it was once the probe ended, and the next transaction on the
// connection waits as the session says.
func TestProbeBoundIsTransactionLocal(t *testing.T) {
	pool := probePool(t)
	tbl := counterTable(t, pool)
	r := txnpgx.New(pool)
	contend(t, r, tbl)
	ctx := testCtx(t)
	release := holdBeside(t, r, nil)
	var inProbe string
	require.NoError(t, r.Run(ctx, func(ctx context.Context, tx pgx.Tx) error {
		return tx.QueryRow(ctx, "SHOW lock_timeout").Scan(&inProbe)
	}))
	release()
	assert.NotEqual(t, "0", inProbe, "the probe ran with a lock_timeout")
	conns := pool.AcquireAllIdle(ctx)
	require.NotEmpty(t, conns)
	for _, c := range conns {
		var after string
		require.NoError(t, c.QueryRow(ctx, "SHOW lock_timeout").Scan(&after))
		assert.Equal(t, "0", after, "the session's lock_timeout after the probe, on every pooled connection")
		c.Release()
	}
}

// Only a lock wait that reached the bound counts as the probe's conflict:
// NOWAIT finding the row locked stays the permanent error the caller asked
// for, in a probe as anywhere.
func TestProbeNowaitStaysPermanent(t *testing.T) {
	pool := probePool(t)
	tbl := counterTable(t, pool)
	r := txnpgx.New(pool)
	contend(t, r, tbl)
	ctx := testCtx(t)
	release := holdBeside(t, r, func(ctx context.Context, tx pgx.Tx) error {
		_, err := tx.Exec(ctx, "SELECT v FROM "+tbl+" WHERE id = 1 FOR UPDATE")
		return err
	})
	tries := 0
	err := r.Run(ctx, func(ctx context.Context, tx pgx.Tx) error {
		tries++
		_, err := tx.Exec(ctx, "SELECT v FROM "+tbl+" WHERE id = 1 FOR UPDATE NOWAIT")
		return err
	})
	release()
	requireRanOnceWithCode(t, tries, err, "55P03")
}

// Outside a probe, a lock_timeout of the caller's own is the permanent
// error it always was.
func TestLockTimeoutOutsideProbeStaysPermanent(t *testing.T) {
	pool := probePool(t)
	tbl := counterTable(t, pool)
	r := txnpgx.New(pool, txn.NoAdaptive())
	ctx := testCtx(t)
	conn, err := pool.Acquire(ctx)
	require.NoError(t, err)
	defer conn.Release()
	other, err := conn.Begin(ctx)
	require.NoError(t, err)
	defer other.Rollback(ctx)
	_, err = other.Exec(ctx, "UPDATE "+tbl+" SET v = 1 WHERE id = 1")
	require.NoError(t, err)
	tries := 0
	err = r.Run(ctx, func(ctx context.Context, tx pgx.Tx) error {
		tries++
		if _, err := tx.Exec(ctx, "SET LOCAL lock_timeout = 20"); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, "UPDATE "+tbl+" SET v = 2 WHERE id = 1")
		return err
	})
	requireRanOnceWithCode(t, tries, err, "55P03")
	assert.False(t, errors.Is(err, txn.ErrCommitUnknown))
}

// On the server too, a probe's lock timeout inside a savepoint that fn
// swallows loses the whole transaction: fn runs again, and nothing of the
// first attempt, the statement before the savepoint included, commits.
func TestProbeBoundExpiredInSavepointRestarts(t *testing.T) {
	pool := probePool(t)
	tbl := newTable(t, pool, "id int PRIMARY KEY, v int NOT NULL")
	mustExec(t, pool, "INSERT INTO "+tbl+" VALUES (1, 0), (2, 0)")
	r := txnpgx.New(pool)
	contend(t, r, tbl)
	ctx := testCtx(t)

	// Another session holds row 2 until the probe's second attempt.
	conn, err := pool.Acquire(ctx)
	require.NoError(t, err)
	defer conn.Release()
	other, err := conn.Begin(ctx)
	require.NoError(t, err)
	_, err = other.Exec(ctx, "UPDATE "+tbl+" SET v = v + 100 WHERE id = 2")
	require.NoError(t, err)

	release := holdBeside(t, r, nil)
	defer release()
	tries := 0
	var spErrs []error
	err = r.Run(ctx, func(ctx context.Context, tx pgx.Tx) error {
		tries++
		if tries == 2 {
			require.NoError(t, other.Commit(ctx))
		}
		if _, err := tx.Exec(ctx, "UPDATE "+tbl+" SET v = v + 1 WHERE id = 1"); err != nil {
			return err
		}
		spErrs = append(spErrs, txn.Savepoint(ctx, func(ctx context.Context, sp pgx.Tx) error {
			_, err := sp.Exec(ctx, "UPDATE "+tbl+" SET v = v + 10 WHERE id = 2")
			return err
		}))
		if tries == 1 {
			release() // the retry then runs alone
		}
		return nil // the savepoint's error swallowed, as a business failure
	})
	require.NoError(t, err)
	require.Equal(t, 2, tries, "the lost transaction ran again")
	require.Len(t, spErrs, 2)
	assert.Equal(t, "55P03", sqlState(spErrs[0]), "the first savepoint met the probe's bound")
	assert.NoError(t, spErrs[1])
	assert.Equal(t, 1, queryInt(t, pool, "SELECT v FROM "+tbl+" WHERE id = 1"), "the first attempt's update did not commit")
	assert.Equal(t, 110, queryInt(t, pool, "SELECT v FROM "+tbl+" WHERE id = 2"))
}
