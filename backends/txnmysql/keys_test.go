package txnmysql_test

import (
	"context"
	"database/sql"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/txnkit/txn"
	"github.com/txnkit/txn/backends/txnmysql"
	"github.com/txnkit/txn/internal/integrationtest"
)

func TestPoolSizeIsMaxOpenConns(t *testing.T) {
	db := openDB(t, nil)
	db.SetMaxOpenConns(12)
	st := txnmysql.New(db).AdmissionStats()
	assert.Equal(t, 12, st.Ceiling)
	assert.Equal(t, 3, st.RetryCeiling)
}

// Two Runners over two pools stand for two processes. With DatabaseKeys,
// read-modify-write increments of one row (a plain read, then an UPDATE
// that writes what was read plus one) never lose an update, and no
// transaction conflicts; no named lock outlives its attempt.
func TestDatabaseKeysAcrossRunners(t *testing.T) {
	d1, d2 := openDB(t, nil), openDB(t, nil)
	tbl := createTable(t, d1, "id INT PRIMARY KEY, v INT NOT NULL")
	_, err := d1.Exec("INSERT INTO " + tbl + " VALUES (1, 0)")
	require.NoError(t, err)
	obs := &integrationtest.Recorder{}
	begin := txnmysql.TxOptions(sql.TxOptions{Isolation: sql.LevelReadCommitted})
	runners := []*txnmysql.Runner{
		txnmysql.New(d1, txn.DatabaseKeys(), txn.WithObserver(obs)).WithBegin(begin),
		txnmysql.New(d2, txn.DatabaseKeys(), txn.WithObserver(obs)).WithBegin(begin),
	}
	ctx := testCtx(t)
	const perRunner, each = 6, 15
	var wg sync.WaitGroup
	for _, r := range runners {
		for g := 0; g < perRunner; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < each; i++ {
					err := r.Run(ctx, func(ctx context.Context, tx *sql.Tx) error {
						var v int
						if err := tx.QueryRowContext(ctx, "SELECT v FROM "+tbl+" WHERE id = 1").Scan(&v); err != nil {
							return err
						}
						_, err := tx.ExecContext(ctx, "UPDATE "+tbl+" SET v = ? WHERE id = 1", v+1)
						return err
					}, txn.Keys("counter:1"))
					assert.NoError(t, err)
				}
			}()
		}
	}
	wg.Wait()
	var v int
	require.NoError(t, d1.QueryRow("SELECT v FROM "+tbl+" WHERE id = 1").Scan(&v))
	assert.Equal(t, 2*perRunner*each, v, "lost updates")
	retries, _ := obs.Snapshot()
	assert.Empty(t, retries, "transactions holding the key conflicted")
	var free sql.NullInt64
	require.NoError(t, d1.QueryRow("SELECT IS_FREE_LOCK(?)", txnmysql.LockName("counter:1")).Scan(&free))
	assert.Equal(t, int64(1), free.Int64, "the named lock outlived its attempts")
}

// A Run of a second Runner on a key the first holds waits on the named
// lock until the first commits.
func TestDatabaseKeysWaitInDatabase(t *testing.T) {
	d1, d2 := openDB(t, nil), openDB(t, nil)
	r1 := txnmysql.New(d1, txn.DatabaseKeys())
	r2 := txnmysql.New(d2, txn.DatabaseKeys())
	ctx := testCtx(t)
	finishFirst := holdKey(t, ctx, r1, "k")
	var order atomic.Int32
	secondDone := make(chan error, 1)
	go func() {
		secondDone <- r2.Run(ctx, func(context.Context, *sql.Tx) error {
			order.CompareAndSwap(0, 2)
			return nil
		}, txn.Keys("k"))
	}()
	for {
		var n int
		require.NoError(t, d1.QueryRowContext(ctx, `SELECT COUNT(*) FROM information_schema.PROCESSLIST
			WHERE INFO LIKE '%SELECT %GET_LOCK(%' AND INFO NOT LIKE '%PROCESSLIST%' AND DB = DATABASE()`).Scan(&n))
		if n == 1 {
			break
		}
		require.NoError(t, ctx.Err(), "the second Run never waited on the named lock")
	}
	require.Zero(t, order.Load(), "the second Run entered fn while the key was held")
	order.CompareAndSwap(0, 1)
	require.NoError(t, finishFirst())
	require.NoError(t, <-secondDone)
	assert.Equal(t, int32(1), order.Load())
}

// A Run waiting on a named lock another Runner holds gives up by its
// context, whether that ends by deadline or by cancellation, without
// entering fn; the holder then commits, and the key is free for the next
// Run once the holder released it (the server ends the waiter's abandoned
// request).
func TestDatabaseKeysWaitEndsWithContext(t *testing.T) {
	d1, d2 := openDB(t, nil), openDB(t, nil)
	r1 := txnmysql.New(d1, txn.DatabaseKeys())
	r2 := txnmysql.New(d2, txn.DatabaseKeys())
	ctx := testCtx(t)
	for _, how := range []string{"deadline", "cancel"} {
		t.Run(how, func(t *testing.T) {
			finishFirst := holdKey(t, ctx, r1, "k")
			var wctx context.Context
			var cancel context.CancelFunc
			if how == "deadline" {
				wctx, cancel = context.WithTimeout(ctx, 300*time.Millisecond)
			} else {
				wctx, cancel = context.WithCancel(ctx)
				time.AfterFunc(300*time.Millisecond, cancel)
			}
			defer cancel()
			start := time.Now()
			var ran atomic.Bool
			err := r2.Run(wctx, func(context.Context, *sql.Tx) error {
				ran.Store(true)
				return nil
			}, txn.Keys("k"))
			took := time.Since(start)
			require.Error(t, err)
			if how == "deadline" {
				assert.ErrorIs(t, err, context.DeadlineExceeded)
			} else {
				assert.ErrorIs(t, err, context.Canceled)
			}
			assert.False(t, ran.Load(), "fn ran without the key")
			assert.Less(t, took, 300*time.Millisecond+2*time.Second, "the Run outlived its context")
			require.NoError(t, finishFirst())
			next, cancelNext := context.WithTimeout(ctx, 10*time.Second)
			defer cancelNext()
			require.NoError(t, r2.Run(next, func(context.Context, *sql.Tx) error { return nil }, txn.Keys("k")),
				"the key stayed taken after its holder committed")
		})
	}
}

// holdKey starts a Run of r that holds key until the returned function is
// called; that function lets the Run commit and returns its error. A test
// that fails before calling it ends the Run with ctx.
func holdKey(t *testing.T, ctx context.Context, r *txnmysql.Runner, key string) (finish func() error) {
	t.Helper()
	return integrationtest.Hold(t, ctx, r, nil, txn.Keys(key))
}
