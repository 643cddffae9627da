package txnpgx_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/txnkit/txn"
	"github.com/txnkit/txn/backends/txnpgx"
	"github.com/txnkit/txn/internal/faultproxy"
	"github.com/txnkit/txn/internal/integrationtest"
)

func TestPoolSizeIsMaxConns(t *testing.T) {
	pool := newPool(t, nil)
	assert.Equal(t, 8, txnpgx.New(pool).AdmissionStats().Ceiling)
	assert.Equal(t, 2, txnpgx.New(pool).AdmissionStats().RetryCeiling)
}

// Two Runners over two pools stand for two processes. With DatabaseKeys,
// read-modify-write increments of one row (a read, then an UPDATE that
// writes what was read plus one) never lose an update, whatever the
// isolation level, and under SERIALIZABLE they never even conflict: each
// transaction takes its snapshot after it holds the key.
func TestDatabaseKeysAcrossRunners(t *testing.T) {
	for _, iso := range []pgx.TxIsoLevel{pgx.ReadCommitted, pgx.Serializable} {
		t.Run(string(iso), func(t *testing.T) {
			p1, p2 := newPool(t, nil), newPool(t, nil)
			tbl := counterTable(t, p1)
			obs := &recorder{}
			begin := txnpgx.TxOptions(pgx.TxOptions{IsoLevel: iso})
			runners := []*txnpgx.Runner{
				txnpgx.New(p1, txn.DatabaseKeys(), txn.WithObserver(obs)).WithBegin(begin),
				txnpgx.New(p2, txn.DatabaseKeys(), txn.WithObserver(obs)).WithBegin(begin),
			}
			ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
			defer cancel()
			const perRunner, each = 6, 15
			var wg sync.WaitGroup
			for ri, r := range runners {
				// Two keys, named in opposite orders by the two Runners:
				// they are taken in one order, so they cannot deadlock.
				keys := txn.Keys("counter:1", "ledger")
				if ri == 1 {
					keys = txn.Keys("ledger", "counter:1")
				}
				for g := 0; g < perRunner; g++ {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for i := 0; i < each; i++ {
							err := r.Run(ctx, func(ctx context.Context, tx pgx.Tx) error {
								var v int
								if err := tx.QueryRow(ctx, "SELECT v FROM "+tbl+" WHERE id = 1").Scan(&v); err != nil {
									return err
								}
								_, err := tx.Exec(ctx, "UPDATE "+tbl+" SET v = $1 WHERE id = 1", v+1)
								return err
							}, keys)
							assert.NoError(t, err)
						}
					}()
				}
			}
			wg.Wait()
			assert.Equal(t, 2*perRunner*each, queryInt(t, p1, "SELECT v FROM "+tbl+" WHERE id = 1"), "lost updates")
			assert.Zero(t, obs.retryCount(), "transactions holding the key conflicted")
			assert.Zero(t, queryInt(t, p1, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"), "advisory locks outlived their transactions")
		})
	}
}

// A Run of a second Runner on a key the first holds waits in the database,
// on an advisory lock, until the first commits.
func TestDatabaseKeysWaitInDatabase(t *testing.T) {
	p1, p2 := newPool(t, nil), newPool(t, nil)
	r1 := txnpgx.New(p1, txn.DatabaseKeys())
	r2 := txnpgx.New(p2, txn.DatabaseKeys())
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	finishFirst := holdKey(t, ctx, r1, "k")
	var order atomic.Int32
	secondDone := make(chan error, 1)
	go func() {
		secondDone <- r2.Run(ctx, func(context.Context, pgx.Tx) error {
			order.CompareAndSwap(0, 2)
			return nil
		}, txn.Keys("k"))
	}()
	for keyWaiters(t, p1, "k") != 1 {
		require.NoError(t, ctx.Err(), "the second Run never waited on the advisory lock")
	}
	require.Zero(t, order.Load(), "the second Run entered fn while the key was held")
	order.CompareAndSwap(0, 1)
	require.NoError(t, finishFirst())
	require.NoError(t, <-secondDone)
	assert.Equal(t, int32(1), order.Load())
}

// The locks and BEGIN travel in one query; what the client sees of it is
// one transaction with the isolation level it asked for (its own
// BeginQuery included), no notice, and a level that was not lowered by the
// statements that took the locks.
func TestDatabaseKeysBeginAsAsked(t *testing.T) {
	cfg := poolConfig(t)
	var mu sync.Mutex
	var notices []string
	cfg.ConnConfig.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) {
		mu.Lock()
		notices = append(notices, n.Severity+": "+n.Message)
		mu.Unlock()
	}
	pool := newPool(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	for _, tc := range []struct {
		opts pgx.TxOptions
		want string
	}{
		{pgx.TxOptions{}, "read committed"},
		{pgx.TxOptions{IsoLevel: pgx.Serializable, AccessMode: pgx.ReadOnly, DeferrableMode: pgx.Deferrable}, "serializable read-only"},
		{pgx.TxOptions{BeginQuery: "BEGIN ISOLATION LEVEL REPEATABLE READ"}, "repeatable read"},
	} {
		r := txnpgx.New(pool, txn.DatabaseKeys()).WithBegin(txnpgx.TxOptions(tc.opts))
		var got, minMessages string
		var locks int
		err := r.Run(ctx, func(ctx context.Context, tx pgx.Tx) error {
			var ro string
			if err := tx.QueryRow(ctx, `SELECT current_setting('transaction_isolation'), current_setting('transaction_read_only'),
				current_setting('client_min_messages'),
				(SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted)`).Scan(&got, &ro, &minMessages, &locks); err != nil {
				return err
			}
			if ro == "on" {
				got += " read-only"
			}
			return nil
		}, txn.Keys("a", "b"))
		require.NoError(t, err)
		assert.Equal(t, tc.want, got, "%+v", tc.opts)
		assert.Equal(t, "notice", minMessages, "the client's notice level is restored inside the transaction")
		assert.Equal(t, 2, locks, "both keys held inside the transaction")
	}
	mu.Lock()
	defer mu.Unlock()
	assert.Empty(t, notices)
}

// On a single connection that is already inside a transaction, a Run with
// DatabaseKeys refuses to begin: taking the locks ends with a COMMIT that
// would commit the caller's transaction.
func TestDatabaseKeysRefuseConnInTransaction(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	conn, err := pgx.Connect(ctx, pgDSN())
	if err != nil {
		unavailable(t, err)
	}
	defer conn.Close(context.Background())
	tbl := counterTable(t, newPool(t, nil))
	outer, err := conn.Begin(ctx)
	require.NoError(t, err)
	_, err = outer.Exec(ctx, "UPDATE "+tbl+" SET v = 7 WHERE id = 1")
	require.NoError(t, err)

	ran := false
	err = txnpgx.New(conn, txn.DatabaseKeys()).Run(ctx, func(context.Context, pgx.Tx) error {
		ran = true
		return nil
	}, txn.Keys("k"))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "already in a transaction")
	assert.False(t, ran)
	require.NoError(t, outer.Rollback(ctx))
	assert.Equal(t, 0, queryInt(t, newPool(t, nil), "SELECT v FROM "+tbl+" WHERE id = 1"), "the caller's transaction was committed")
}

// sqlTracer records the SQL of every query pgx sends through a pool's
// connections.
type sqlTracer struct {
	mu  sync.Mutex
	sql []string
}

func (s *sqlTracer) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	s.mu.Lock()
	s.sql = append(s.sql, d.SQL)
	s.mu.Unlock()
	return ctx
}

func (s *sqlTracer) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

func (s *sqlTracer) take() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.sql
	s.sql = nil
	return out
}

// advisoryLocks counts the advisory locks held or awaited in the test
// database, by every session.
func advisoryLocks(t *testing.T, pool *pgxpool.Pool) int {
	return queryInt(t, pool, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND database = (SELECT oid FROM pg_database WHERE datname = current_database())")
}

// A Run that commits releases its keys with pgx's own COMMIT, which ends
// the transaction that holds them: the Runner sends no statement of its
// own between fn's last one and COMMIT, nor after it. Every other ending
// (fn's error, a failed statement that fn ignored, fn ending the
// transaction itself) reports what pgx would, and leaves no lock behind on
// the pooled connection.
func TestDatabaseKeysCommitReleasesKeys(t *testing.T) {
	tracer := &sqlTracer{}
	cfg := poolConfig(t)
	cfg.MaxConns = 1
	cfg.ConnConfig.Tracer = tracer
	pool := newPool(t, cfg)
	other := newPool(t, nil)
	tbl := counterTable(t, other)
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	for _, iso := range []pgx.TxIsoLevel{pgx.ReadCommitted, pgx.Serializable} {
		r := txnpgx.New(pool, txn.DatabaseKeys()).WithBegin(txnpgx.TxOptions(pgx.TxOptions{IsoLevel: iso}))
		update := "UPDATE " + tbl + " SET v = v + 1 WHERE id = 1"
		tracer.take()

		err := r.Run(ctx, func(ctx context.Context, tx pgx.Tx) error {
			_, err := tx.Exec(ctx, update)
			return err
		}, txn.Keys("a", "b"))
		require.NoError(t, err, iso)
		sent := tracer.take()
		require.Len(t, sent, 3, "%s: the locks and BEGIN, fn's UPDATE, then pgx's COMMIT, which releases the keys: %q", iso, sent)
		assert.Contains(t, sent[0], "pg_advisory_lock")
		assert.Contains(t, sent[0], "pg_advisory_xact_lock")
		assert.Equal(t, update, sent[1])
		assert.Equal(t, "commit", sent[2])
		assert.Zero(t, advisoryLocks(t, other), "%s: the keys outlived the commit", iso)

		// fn's error: rolled back, which releases the keys.
		boom := errors.New("boom")
		err = r.Run(ctx, func(ctx context.Context, tx pgx.Tx) error {
			_, err := tx.Exec(ctx, update)
			require.NoError(t, err)
			return boom
		}, txn.Keys("a"))
		require.ErrorIs(t, err, boom)
		assert.Zero(t, advisoryLocks(t, other), "%s: keys held after a rollback", iso)

		// A statement failed and fn went on: COMMIT answers ROLLBACK, which
		// Run must report, not take for a commit.
		err = r.Run(ctx, func(ctx context.Context, tx pgx.Tx) error {
			_, err := tx.Exec(ctx, update)
			require.NoError(t, err)
			_, err = tx.Exec(ctx, "SELECT 1/0")
			require.Error(t, err)
			return nil
		}, txn.Keys("a"))
		require.ErrorIs(t, err, pgx.ErrTxCommitRollback, iso)
		assert.Zero(t, advisoryLocks(t, other), "%s: keys held after COMMIT answered ROLLBACK", iso)

		// fn committed the transaction itself.
		err = r.Run(ctx, func(ctx context.Context, tx pgx.Tx) error {
			return tx.Commit(ctx)
		}, txn.Keys("a"))
		require.ErrorIs(t, err, txn.ErrFnFinishedTx, iso)
		assert.Zero(t, advisoryLocks(t, other), "%s: keys held after fn committed", iso)
	}
	assert.Equal(t, 2, queryInt(t, other, "SELECT v FROM "+tbl+" WHERE id = 1"), "only the two committed Runs wrote")

	// A COMMIT of the caller's own (pgx.TxOptions.CommitQuery) is sent as
	// it is, and releases the keys as pgx's would.
	r := txnpgx.New(pool, txn.DatabaseKeys()).WithBegin(txnpgx.TxOptions(pgx.TxOptions{CommitQuery: "COMMIT"}))
	tracer.take()
	require.NoError(t, r.Run(ctx, func(context.Context, pgx.Tx) error { return nil }, txn.Keys("a")))
	sent := tracer.take()
	require.Len(t, sent, 2, "%q", sent)
	assert.Equal(t, "COMMIT", sent[1])
	assert.Zero(t, advisoryLocks(t, other))
}

// A transaction that fails at COMMIT (a serialization failure of
// SERIALIZABLE, found only when it commits) is not committed, is retried,
// and its keys are released with the failed transaction.
func TestDatabaseKeysCommitFailureReleasesKeys(t *testing.T) {
	pool, other := newPool(t, nil), newPool(t, nil)
	tbl := newTable(t, other, "id int PRIMARY KEY, v int NOT NULL")
	mustExec(t, other, "INSERT INTO "+tbl+" VALUES (1, 0), (2, 0)")
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	obs := &recorder{}
	r := txnpgx.New(pool, txn.DatabaseKeys(), txn.WithObserver(obs)).WithBegin(serializable())

	// Write skew: the Run reads row 2 and writes row 1 while a concurrent
	// SERIALIZABLE transaction, without the key, reads row 1 and writes
	// row 2 and commits first. The Run's COMMIT then fails with 40001.
	var tries atomic.Int32
	err := r.Run(ctx, func(ctx context.Context, tx pgx.Tx) error {
		var v int
		if err := tx.QueryRow(ctx, "SELECT v FROM "+tbl+" WHERE id = 2").Scan(&v); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "UPDATE "+tbl+" SET v = $1 WHERE id = 1", v+1); err != nil {
			return err
		}
		if tries.Add(1) == 1 {
			rival, err := other.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.Serializable})
			require.NoError(t, err)
			var w int
			require.NoError(t, rival.QueryRow(ctx, "SELECT v FROM "+tbl+" WHERE id = 1").Scan(&w))
			_, err = rival.Exec(ctx, "UPDATE "+tbl+" SET v = $1 WHERE id = 2", w+10)
			require.NoError(t, err)
			require.NoError(t, rival.Commit(ctx))
		}
		return nil
	}, txn.Keys("a"))
	require.NoError(t, err)
	assert.Equal(t, int32(2), tries.Load(), "the first COMMIT failed and the Run tried again")
	assert.Equal(t, 1, obs.retryCount())
	assert.Equal(t, 11, queryInt(t, other, "SELECT v FROM "+tbl+" WHERE id = 1"), "the retry read the rival's write")
	assert.Zero(t, advisoryLocks(t, other), "keys held after the failed COMMIT")
}

// The connection is cut as the COMMIT that releases the keys goes out:
// before the server sees it, or after the server committed and answered.
// The outcome is unknown to the client either way; Run must say so and
// not run fn again, and the server, which ends the session, must release
// the keys with it.
func TestDatabaseKeysConnectionLostAtCommit(t *testing.T) {
	for _, tc := range []struct {
		mode faultproxy.Mode
		rows int
	}{{faultproxy.CutBeforeForward, 0}, {faultproxy.CutAfterReply, 1}} {
		t.Run(tc.mode.String(), func(t *testing.T) {
			direct := newPool(t, nil)
			tbl := newTable(t, direct, "id int PRIMARY KEY")
			pool, proxy := proxiedPool(t)
			var attempts int
			err := txnpgx.New(pool, txn.DatabaseKeys()).Run(testCtx(t), func(ctx context.Context, tx pgx.Tx) error {
				attempts++
				if _, err := tx.Exec(ctx, "INSERT INTO "+tbl+" VALUES (1)"); err != nil {
					return err
				}
				proxy.Arm([]byte("commit"), tc.mode)
				return nil
			}, txn.Keys("k"))
			require.Equal(t, 1, proxy.Fires())
			require.ErrorIs(t, err, txn.ErrCommitUnknown)
			assert.Equal(t, 1, attempts, "fn is not run again after an unknown commit")
			assert.Equal(t, tc.rows, queryInt(t, direct, "SELECT count(*) FROM "+tbl))
			ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
			defer cancel()
			for advisoryLocks(t, direct) != 0 {
				// The server notices the closed socket on its own time.
				require.NoError(t, ctx.Err(), "the keys outlived the cut connection")
			}
		})
	}
}

// Inside a Run with DatabaseKeys, fn's transaction works as any other: a
// savepoint rolled back undoes only its own writes, a nested Run joins, and
// TxFrom returns the handle fn was given.
func TestDatabaseKeysSavepointAndNestedRun(t *testing.T) {
	pool := newPool(t, nil)
	tbl := newTable(t, pool, "id int PRIMARY KEY")
	r := txnpgx.New(pool, txn.DatabaseKeys())
	ctx := testCtx(t)
	err := r.Run(ctx, func(ctx context.Context, tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "INSERT INTO "+tbl+" VALUES (1)"); err != nil {
			return err
		}
		got, ok := txn.TxFrom[pgx.Tx](ctx)
		require.True(t, ok)
		assert.Same(t, tx, got)
		spErr := txn.Savepoint(ctx, func(ctx context.Context, sp pgx.Tx) error {
			if _, err := sp.Exec(ctx, "INSERT INTO "+tbl+" VALUES (2)"); err != nil {
				return err
			}
			return errors.New("undo 2")
		})
		require.EqualError(t, spErr, "undo 2")
		return r.Run(ctx, func(ctx context.Context, inner pgx.Tx) error {
			_, err := inner.Exec(ctx, "INSERT INTO "+tbl+" VALUES (3)")
			return err
		}, txn.Keys("other"))
	}, txn.Keys("k"))
	require.NoError(t, err)
	assert.Equal(t, 2, queryInt(t, pool, "SELECT count(*) FROM "+tbl+" WHERE id IN (1, 3)"))
	assert.Zero(t, queryInt(t, pool, "SELECT count(*) FROM "+tbl+" WHERE id = 2"))
	assert.Zero(t, advisoryLocks(t, pool))
}

// A Run waiting in the database for a key another process holds gives up
// when its context ends, without entering fn, and leaves no lock or lock
// request behind; the holder then commits normally.
func TestDatabaseKeysWaitEndsWithContext(t *testing.T) {
	p1, p2 := newPool(t, nil), newPool(t, nil)
	r1 := txnpgx.New(p1, txn.DatabaseKeys())
	r2 := txnpgx.New(p2, txn.DatabaseKeys())
	ctx := testCtx(t)
	key := fmt.Sprintf("k%016x", rand.Uint64())
	finishFirst := holdKey(t, ctx, r1, key)
	waitCtx, cancel := context.WithCancel(ctx)
	secondDone := make(chan error, 1)
	var ran atomic.Bool
	go func() {
		secondDone <- r2.Run(waitCtx, func(context.Context, pgx.Tx) error {
			ran.Store(true)
			return nil
		}, txn.Keys(key))
	}()
	for keyWaiters(t, p1, key) != 1 {
		require.NoError(t, ctx.Err(), "the second Run never waited on the advisory lock")
	}
	cancel()
	err := <-secondDone
	require.ErrorIs(t, err, context.Canceled)
	assert.False(t, ran.Load())
	for keyWaiters(t, p1, key) != 0 {
		require.NoError(t, ctx.Err(), "the canceled lock request stayed in the database")
	}
	require.NoError(t, finishFirst())
	for advisoryLocks(t, p1) != 0 {
		require.NoError(t, ctx.Err(), "keys held after both Runs returned")
	}
	// The second pool still works.
	require.NoError(t, r2.Run(ctx, func(context.Context, pgx.Tx) error { return nil }, txn.Keys(key)))
}

// keyWaiters counts the sessions waiting for the advisory lock of key.
func keyWaiters(t *testing.T, pool *pgxpool.Pool, key string) int {
	// The advisory lock's 64-bit key is split in classid (high half) and
	// objid (low half).
	return queryInt(t, pool, `SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted
		AND classid::bigint = ($1::bigint >> 32) & 4294967295 AND objid::bigint = $1::bigint & 4294967295`, txnpgx.KeyHashes([]string{key})[0])
}

// holdKey starts a Run of r that holds key until the returned function is
// called; that function lets the Run commit and returns its error. A test
// that fails before calling it ends the Run with ctx.
func holdKey(t *testing.T, ctx context.Context, r *txnpgx.Runner, key string) (finish func() error) {
	t.Helper()
	return integrationtest.Hold(t, ctx, r, nil, txn.Keys(key))
}

// Over a single *pgx.Conn, a keyed Run commits, releases its keys with its
// COMMIT, and leaves the connection ready for the next Run.
func TestDatabaseKeysOverConn(t *testing.T) {
	ctx := testCtx(t)
	conn, err := pgx.Connect(ctx, pgDSN())
	if err != nil {
		unavailable(t, err)
	}
	defer conn.Close(context.Background())
	pool := newPool(t, nil)
	tbl := counterTable(t, pool)
	r := txnpgx.New(conn, txn.DatabaseKeys()).WithBegin(serializable())
	for range 3 {
		require.NoError(t, r.Run(ctx, func(ctx context.Context, tx pgx.Tx) error {
			_, err := tx.Exec(ctx, "UPDATE "+tbl+" SET v = v + 1 WHERE id = 1")
			return err
		}, txn.Keys("a", "b")))
		var held int
		require.NoError(t, conn.QueryRow(ctx, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()").Scan(&held))
		assert.Zero(t, held, "keys held on the connection after the Run")
		assert.Equal(t, byte('I'), conn.PgConn().TxStatus())
	}
	assert.Equal(t, 3, queryInt(t, pool, "SELECT v FROM "+tbl+" WHERE id = 1"))
}

// A transaction handle kept past its Run is closed, as pgx closes its own
// once committed, though the Runner committed it with a query of its own
// and the connection went back to the pool: every statement sent through
// it, or through a savepoint begun in it and never ended, fails with
// pgx.ErrTxClosed and writes nothing.
func TestDatabaseKeysTxClosedAfterRun(t *testing.T) {
	cfg := poolConfig(t)
	cfg.MaxConns = 1
	pool := newPool(t, cfg)
	tbl := newTable(t, pool, "id int PRIMARY KEY")
	r := txnpgx.New(pool, txn.DatabaseKeys())
	ctx := testCtx(t)
	var kept, keptSp pgx.Tx
	err := r.Run(ctx, func(ctx context.Context, tx pgx.Tx) error {
		sp, err := tx.Begin(ctx)
		if err != nil {
			return err
		}
		if _, err := sp.Exec(ctx, "INSERT INTO "+tbl+" VALUES (1)"); err != nil {
			return err
		}
		kept, keptSp = tx, sp
		return nil
	}, txn.Keys("k"))
	require.NoError(t, err)

	insert := func(id int) string { return fmt.Sprintf("INSERT INTO %s VALUES (%d)", tbl, id) }
	for name, h := range map[string]pgx.Tx{"transaction": kept, "savepoint": keptSp} {
		_, err = h.Exec(ctx, insert(2))
		assert.ErrorIs(t, err, pgx.ErrTxClosed, "%s: Exec", name)
		rows, err := h.Query(ctx, insert(3))
		assert.ErrorIs(t, err, pgx.ErrTxClosed, "%s: Query", name)
		if assert.NotNil(t, rows, "%s: Query returns Rows that carry the error", name) {
			assert.False(t, rows.Next())
			assert.ErrorIs(t, rows.Err(), pgx.ErrTxClosed)
			rows.Close()
		}
		var n int
		assert.ErrorIs(t, h.QueryRow(ctx, insert(4)+" RETURNING id").Scan(&n), pgx.ErrTxClosed, "%s: QueryRow", name)
		b := &pgx.Batch{}
		b.Queue(insert(5))
		br := h.SendBatch(ctx, b)
		_, err = br.Exec()
		assert.ErrorIs(t, err, pgx.ErrTxClosed, "%s: SendBatch", name)
		assert.ErrorIs(t, br.Close(), pgx.ErrTxClosed, "%s: SendBatch's Close", name)
		_, err = h.CopyFrom(ctx, pgx.Identifier{tbl}, []string{"id"}, pgx.CopyFromRows([][]any{{6}}))
		assert.ErrorIs(t, err, pgx.ErrTxClosed, "%s: CopyFrom", name)
		_, err = h.Prepare(ctx, "", insert(7))
		assert.ErrorIs(t, err, pgx.ErrTxClosed, "%s: Prepare", name)
		_, err = h.Begin(ctx)
		assert.ErrorIs(t, err, pgx.ErrTxClosed, "%s: Begin", name)
		assert.ErrorIs(t, h.Commit(ctx), pgx.ErrTxClosed, "%s: Commit", name)
		assert.ErrorIs(t, h.Rollback(ctx), pgx.ErrTxClosed, "%s: Rollback", name)
	}
	var ids []int
	rows, err := pool.Query(ctx, "SELECT id FROM "+tbl+" ORDER BY id")
	require.NoError(t, err)
	ids, err = pgx.CollectRows(rows, pgx.RowTo[int])
	require.NoError(t, err)
	assert.Equal(t, []int{1}, ids, "only the Run's own write")
	assert.Zero(t, advisoryLocks(t, pool))
}
