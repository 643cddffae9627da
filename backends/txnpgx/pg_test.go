package txnpgx_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	"github.com/txnkit/txn"
	"github.com/txnkit/txn/backends/txnpgx"
	"github.com/txnkit/txn/internal/faultproxy"
	"github.com/txnkit/txn/internal/integrationtest"
)

func serializable() txn.BeginOption[pgx.Tx] {
	return txnpgx.TxOptions(pgx.TxOptions{IsoLevel: pgx.Serializable})
}

func repeatableRead() txn.BeginOption[pgx.Tx] {
	return txnpgx.TxOptions(pgx.TxOptions{IsoLevel: pgx.RepeatableRead})
}

// runConcurrently calls run(i) for i in 0..n-1, each on its own goroutine,
// and returns their errors once all have returned.
func runConcurrently(n int, run func(i int) error) []error {
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = run(i)
		}()
	}
	wg.Wait()
	return errs
}

// runPair runs fn(0) and fn(1) with r on two goroutines and requires both
// Runs to succeed. A non-nil firstDone is closed once Run of fn(0) has
// returned.
func runPair(t *testing.T, ctx context.Context, r *txnpgx.Runner, fn func(i int) func(context.Context, pgx.Tx) error, firstDone chan struct{}) {
	t.Helper()
	errs := runConcurrently(2, func(i int) error {
		err := r.Run(ctx, fn(i))
		if i == 0 && firstDone != nil {
			close(firstDone)
		}
		return err
	})
	require.NoError(t, errs[0])
	require.NoError(t, errs[1])
}

// awaitFirst waits until firstDone is closed; after waitLimit it returns a
// permanent error for fn to return.
func awaitFirst(firstDone <-chan struct{}) error {
	select {
	case <-firstDone:
		return nil
	case <-time.After(waitLimit):
		return txn.Permanent(errors.New("transaction 0 never finished"))
	}
}

// TestWriteSkewSerializableRetried runs two SERIALIZABLE transactions that
// each read the sum of a table and insert a row derived from it: a write
// skew. Both read before either writes, so PostgreSQL must fail one with
// 40001; the one that commits second is told at COMMIT. Run retries it, and
// both rows end up inserted exactly once, with the values of a serial
// execution.
func TestWriteSkewSerializableRetried(t *testing.T) {
	pool := newPool(t, nil)
	tbl := newTable(t, pool, "k text PRIMARY KEY, v int NOT NULL")
	rec := &recorder{}
	r := txnpgx.New(pool, txn.WithObserver(rec)).WithBegin(serializable())
	ctx := testCtx(t)

	bothRead := integrationtest.NewBarrier(2)
	firstDone := make(chan struct{})
	var attempts [2]atomic.Int32
	var nilReturns [2]atomic.Int32 // attempts in which fn itself succeeded
	fn := func(i int) func(context.Context, pgx.Tx) error {
		return func(ctx context.Context, tx pgx.Tx) error {
			n := attempts[i].Add(1)
			var sum int
			if err := tx.QueryRow(ctx, "SELECT coalesce(sum(v), 0) FROM "+tbl).Scan(&sum); err != nil {
				return err
			}
			if n == 1 {
				if err := bothRead.WaitFor(waitLimit); err != nil {
					return txn.Permanent(err)
				}
			}
			if _, err := tx.Exec(ctx, "INSERT INTO "+tbl+" (k, v) VALUES ($1, $2)", strconv.Itoa(i), sum+1); err != nil {
				return err
			}
			if i == 1 && n == 1 {
				// Let transaction 0 commit first.
				if err := awaitFirst(firstDone); err != nil {
					return err
				}
			}
			nilReturns[i].Add(1)
			return nil
		}
	}
	runPair(t, ctx, r, fn, firstDone)

	total := attempts[0].Load() + attempts[1].Load()
	require.Greater(t, total, int32(2), "neither transaction was retried")
	require.Contains(t, rec.retryCodes(), "40001")
	for _, c := range rec.retryCodes() {
		require.Equal(t, "40001", c)
	}
	// Transaction 1's first attempt returned nil from fn, so its 40001
	// came from COMMIT.
	if attempts[1].Load() > 1 && nilReturns[1].Load() == attempts[1].Load() {
		t.Logf("transaction 1 failed at COMMIT with 40001 and was retried")
	}

	rows, err := pool.Query(ctx, "SELECT k, v FROM "+tbl+" ORDER BY v")
	require.NoError(t, err)
	got, err := pgx.CollectRows(rows, pgx.RowToStructByPos[struct {
		K string
		V int
	}])
	require.NoError(t, err)
	require.Len(t, got, 2, "each logical transaction applied exactly once")
	require.Equal(t, 1, got[0].V)
	require.Equal(t, 2, got[1].V, "the retried transaction saw the other's row")
	require.NotEqual(t, got[0].K, got[1].K)
}

// TestSerializationFailureAtCommitRetried pins the COMMIT case down: both
// transactions read and write, transaction 0 commits, and transaction 1,
// whose fn has already returned nil, fails at COMMIT with 40001, a definite
// rollback that Run retries.
func TestSerializationFailureAtCommitRetried(t *testing.T) {
	pool := newPool(t, nil)
	tbl := newTable(t, pool, "id int PRIMARY KEY, on_call bool NOT NULL")
	mustExec(t, pool, "INSERT INTO "+tbl+" VALUES (1, true), (2, true)")
	rec := &recorder{}
	r := txnpgx.New(pool, txn.WithObserver(rec)).WithBegin(serializable())
	ctx := testCtx(t)

	// The doctors-on-call write skew: each goes off call if the other is
	// still on call.
	bothWrote := integrationtest.NewBarrier(2)
	firstDone := make(chan struct{})
	var attempts [2]atomic.Int32
	var fnErrs [2][]error
	fn := func(i int) func(context.Context, pgx.Tx) error {
		return func(ctx context.Context, tx pgx.Tx) (err error) {
			n := attempts[i].Add(1)
			defer func() { fnErrs[i] = append(fnErrs[i], err) }()
			var onCall int
			if err := tx.QueryRow(ctx, "SELECT count(*) FROM "+tbl+" WHERE on_call").Scan(&onCall); err != nil {
				return err
			}
			if onCall >= 2 {
				if _, err := tx.Exec(ctx, "UPDATE "+tbl+" SET on_call = false WHERE id = $1", i+1); err != nil {
					return err
				}
			}
			if n == 1 {
				if err := bothWrote.WaitFor(waitLimit); err != nil {
					return txn.Permanent(err)
				}
				if i == 1 {
					if err := awaitFirst(firstDone); err != nil {
						return err
					}
				}
			}
			return nil
		}
	}
	runPair(t, ctx, r, fn, firstDone)
	require.Equal(t, int32(1), attempts[0].Load())
	require.Equal(t, int32(2), attempts[1].Load())
	require.Equal(t, []error{nil, nil}, fnErrs[1], "fn succeeded both times: the 40001 came from COMMIT")
	require.Equal(t, []string{"40001"}, rec.retryCodes())
	require.Equal(t, 1, queryInt(t, pool, "SELECT count(*) FROM "+tbl+" WHERE on_call"), "one doctor stays on call")
}

// incrementLosingFirstRace returns an fn that reads row 1 of tbl (a
// counterTable) and increments its v. In the first attempt another
// connection updates the row between the two, so under REPEATABLE READ or
// SERIALIZABLE the UPDATE fails with 40001. *attempts counts the calls.
func incrementLosingFirstRace(t *testing.T, pool *pgxpool.Pool, tbl string, attempts *int) func(context.Context, pgx.Tx) error {
	return func(ctx context.Context, tx pgx.Tx) error {
		*attempts++
		var v int
		if err := tx.QueryRow(ctx, "SELECT v FROM "+tbl+" WHERE id = 1").Scan(&v); err != nil {
			return err
		}
		if *attempts == 1 {
			concurrentUpdate(t, pool, tbl, 1)
		}
		_, err := tx.Exec(ctx, "UPDATE "+tbl+" SET v = v + 1 WHERE id = 1")
		return err
	}
}

// TestSerializationFailureInStatementRetried: under REPEATABLE READ, a row
// updated and committed by another connection after the snapshot was taken
// makes the transaction's own UPDATE fail with 40001; Run re-runs fn in a
// fresh transaction, which sees the other update.
func TestSerializationFailureInStatementRetried(t *testing.T) {
	pool := newPool(t, nil)
	tbl := counterTable(t, pool)
	rec := &recorder{}
	r := txnpgx.New(pool, txn.WithObserver(rec)).WithBegin(repeatableRead())
	var attempts int
	err := r.Run(testCtx(t), incrementLosingFirstRace(t, pool, tbl, &attempts))
	require.NoError(t, err)
	require.Equal(t, 2, attempts)
	require.Equal(t, []string{"40001"}, rec.retryCodes())
	require.Equal(t, 101, queryInt(t, pool, "SELECT v FROM "+tbl+" WHERE id = 1"))
}

// TestDeadlockRetried makes two transactions lock two rows in opposite
// order. PostgreSQL (deadlock_timeout 50ms on these sessions) aborts one
// with 40P01; Run retries it and both transactions' updates are applied
// exactly once.
func TestDeadlockRetried(t *testing.T) {
	pool := newPool(t, nil)
	tbl := newTable(t, pool, "id int PRIMARY KEY, v int NOT NULL")
	mustExec(t, pool, "INSERT INTO "+tbl+" VALUES (1, 0), (2, 0)")
	rec := &recorder{}
	r := txnpgx.New(pool, txn.WithObserver(rec))
	ctx := testCtx(t)

	bothLocked := integrationtest.NewBarrier(2)
	var attempts [2]atomic.Int32
	fn := func(i int) func(context.Context, pgx.Tx) error {
		first, second := 1, 2
		add := 1
		if i == 1 {
			first, second, add = 2, 1, 10
		}
		return func(ctx context.Context, tx pgx.Tx) error {
			n := attempts[i].Add(1)
			if _, err := tx.Exec(ctx, "UPDATE "+tbl+" SET v = v + $1 WHERE id = $2", add, first); err != nil {
				return err
			}
			if n == 1 {
				if err := bothLocked.WaitFor(waitLimit); err != nil {
					return txn.Permanent(err)
				}
			}
			_, err := tx.Exec(ctx, "UPDATE "+tbl+" SET v = v + $1 WHERE id = $2", add, second)
			return err
		}
	}
	runPair(t, ctx, r, fn, nil)
	require.Equal(t, int32(3), attempts[0].Load()+attempts[1].Load(), "exactly one victim, retried once")
	require.Equal(t, []string{"40P01"}, rec.retryCodes())
	require.Equal(t, 11, queryInt(t, pool, "SELECT v FROM "+tbl+" WHERE id = 1"))
	require.Equal(t, 11, queryInt(t, pool, "SELECT v FROM "+tbl+" WHERE id = 2"))
}

// holdRowLock locks row id of table FOR UPDATE on its own connection and
// keeps it until release is closed; the returned channel is closed once
// the lock is gone.
func holdRowLock(t *testing.T, pool *pgxpool.Pool, table string, id int, release <-chan struct{}) <-chan struct{} {
	t.Helper()
	ctx := context.Background()
	tx, err := pool.Begin(ctx)
	require.NoError(t, err)
	_, err = tx.Exec(ctx, "SELECT 1 FROM "+table+" WHERE id = $1 FOR UPDATE", id)
	require.NoError(t, err)
	released := make(chan struct{})
	go func() {
		defer close(released)
		select {
		case <-release:
		case <-time.After(waitLimit):
		}
		_ = tx.Rollback(context.Background())
	}()
	return released
}

// TestNowaitLockNotAvailable: SELECT ... FOR UPDATE NOWAIT on a row locked
// by another connection fails with 55P03. By default that is permanent: fn
// runs once and the error comes back. With
// Classifier(ClassifyOptions{LockNotAvailable: true}) Run retries, and the
// retry succeeds once the lock is released.
func TestNowaitLockNotAvailable(t *testing.T) {
	pool := newPool(t, nil)
	tbl := counterTable(t, pool)
	ctx := testCtx(t)

	t.Run("default is permanent", func(t *testing.T) {
		release := make(chan struct{})
		released := holdRowLock(t, pool, tbl, 1, release)
		defer func() { close(release); <-released }()
		var attempts int
		err := txnpgx.New(pool).Run(ctx, func(ctx context.Context, tx pgx.Tx) error {
			attempts++
			_, err := tx.Exec(ctx, "SELECT v FROM "+tbl+" WHERE id = 1 FOR UPDATE NOWAIT")
			return err
		})
		requireRanOnceWithCode(t, attempts, err, "55P03")
		var gu *txn.GiveUpError
		require.False(t, errors.As(err, &gu), "a permanent error is returned as it is")
	})

	t.Run("opted in is retried", func(t *testing.T) {
		release := make(chan struct{})
		released := holdRowLock(t, pool, tbl, 1, release)
		var once sync.Once
		obs := &releaseOnRetry{release: func() { once.Do(func() { close(release) }) }}
		r := txnpgx.New(pool, txn.WithClassifier(txnpgx.Classifier(txnpgx.ClassifyOptions{LockNotAvailable: true})), txn.WithObserver(obs))
		defer func() { obs.release(); <-released }()
		var attempts int
		err := r.Run(ctx, func(ctx context.Context, tx pgx.Tx) error {
			attempts++
			if attempts > 1 {
				<-released // the holder has let go
			}
			_, err := tx.Exec(ctx, "UPDATE "+tbl+" SET v = v + 1 WHERE id = (SELECT id FROM "+tbl+" WHERE id = 1 FOR UPDATE NOWAIT)")
			return err
		})
		require.NoError(t, err)
		require.Equal(t, 2, attempts)
		require.Equal(t, "55P03", sqlState(obs.err))
		require.Equal(t, 1, queryInt(t, pool, "SELECT v FROM "+tbl+" WHERE id = 1"))
	})
}

// releaseOnRetry calls release when Run schedules its first retry.
type releaseOnRetry struct {
	txn.NopObserver
	release func()
	err     error
}

func (o *releaseOnRetry) RetryScheduled(_ context.Context, e txn.RetryEvent) {
	if o.err == nil {
		o.err = e.Err
	}
	o.release()
}

// TestUniqueViolationPermanent: a unique violation (23505) inside fn is
// permanent: fn runs once and Run returns the very error fn returned.
func TestUniqueViolationPermanent(t *testing.T) {
	pool := newPool(t, nil)
	tbl := newTable(t, pool, "id int PRIMARY KEY")
	mustExec(t, pool, "INSERT INTO "+tbl+" VALUES (1)")
	var attempts int
	var fnErr error
	err := txnpgx.New(pool).Run(testCtx(t), func(ctx context.Context, tx pgx.Tx) error {
		attempts++
		if _, err := tx.Exec(ctx, "INSERT INTO "+tbl+" VALUES (2)"); err != nil {
			return err
		}
		_, fnErr = tx.Exec(ctx, "INSERT INTO "+tbl+" VALUES (1)")
		return fnErr
	})
	requireRanOnceWithCode(t, attempts, err, "23505")
	require.Same(t, fnErr, err, "the error comes back as fn returned it")
	require.Equal(t, 1, queryInt(t, pool, "SELECT count(*) FROM "+tbl), "the transaction was rolled back")
}

// TestConnectionKilledDuringFn: the transaction's backend is terminated
// with pg_terminate_backend from another connection while fn runs. Nothing
// was committed, so Run retries on a fresh connection, and the row is
// inserted once.
func TestConnectionKilledDuringFn(t *testing.T) {
	pool := newPool(t, nil)
	tbl := newTable(t, pool, "id int PRIMARY KEY, pid int NOT NULL")
	rec := &recorder{}
	r := txnpgx.New(pool, txn.WithObserver(rec))
	var pids []uint32
	err := r.Run(testCtx(t), func(ctx context.Context, tx pgx.Tx) error {
		pid := tx.Conn().PgConn().PID()
		pids = append(pids, pid)
		if _, err := tx.Exec(ctx, "INSERT INTO "+tbl+" VALUES (1, $1)", int64(pid)); err != nil {
			return err
		}
		if len(pids) == 1 {
			var ok bool
			// Wait (up to 10 s) for the backend to be gone.
			if err := pool.QueryRow(ctx, "SELECT pg_terminate_backend($1, 10000)", int64(pid)).Scan(&ok); err != nil || !ok {
				return txn.Permanent(fmt.Errorf("pg_terminate_backend: %v %v", ok, err))
			}
		}
		_, err := tx.Exec(ctx, "SELECT 1")
		return err
	})
	require.NoError(t, err)
	require.Len(t, pids, 2)
	require.NotEqual(t, pids[0], pids[1], "the retry ran on a fresh connection")
	require.Len(t, rec.retries, 1)
	t.Logf("error seen after the kill: %v (class %v)", rec.retries[0].Err, txnpgx.Classify(rec.retries[0].Err))
	require.Equal(t, 1, queryInt(t, pool, "SELECT count(*) FROM "+tbl))
	require.Equal(t, int(pids[1]), queryInt(t, pool, "SELECT pid FROM "+tbl+" WHERE id = 1"))
}

// proxiedPool returns a pool whose connections go through a fault proxy in
// front of the server.
func proxiedPool(t *testing.T) (*pgxpool.Pool, *faultproxy.Proxy) {
	t.Helper()
	direct := poolConfig(t)
	target := fmt.Sprintf("%s:%d", direct.ConnConfig.Host, direct.ConnConfig.Port)
	p, err := faultproxy.Start(target)
	require.NoError(t, err)
	t.Cleanup(func() { _ = p.Close() })
	cfg := poolConfig(t)
	host, port, ok := splitHostPort(p.Addr())
	require.True(t, ok)
	cfg.ConnConfig.Host, cfg.ConnConfig.Port = host, port
	cfg.ConnConfig.Fallbacks = nil
	return newPool(t, cfg), p
}

func splitHostPort(addr string) (string, uint16, bool) {
	for i := len(addr) - 1; i >= 0; i-- {
		if addr[i] == ':' {
			n, err := strconv.ParseUint(addr[i+1:], 10, 16)
			return addr[:i], uint16(n), err == nil
		}
	}
	return "", 0, false
}

// TestConnectionLostDuringCommit: the proxy forwards COMMIT, lets the
// server commit and answer, and cuts the connection before the answer
// reaches the client. Run must not run fn again: it returns an error
// matching txn.ErrCommitUnknown, and the row was in fact committed exactly
// once.
func TestConnectionLostDuringCommit(t *testing.T) {
	direct := newPool(t, nil)
	tbl := newTable(t, direct, "id int PRIMARY KEY")
	pool, proxy := proxiedPool(t)
	r := txnpgx.New(pool)
	var attempts int
	err := r.Run(testCtx(t), func(ctx context.Context, tx pgx.Tx) error {
		attempts++
		if _, err := tx.Exec(ctx, "INSERT INTO "+tbl+" VALUES (1)"); err != nil {
			return err
		}
		proxy.Arm([]byte("commit"), faultproxy.CutAfterReply)
		return nil
	})
	select {
	case <-proxy.Fired():
	default:
		require.FailNow(t, "the fault did not fire")
	}
	require.Error(t, err)
	require.ErrorIs(t, err, txn.ErrCommitUnknown)
	var gu *txn.GiveUpError
	require.ErrorAs(t, err, &gu)
	require.True(t, gu.Ambiguous)
	require.Equal(t, 1, attempts, "fn is not run again after an unknown commit")
	require.Equal(t, 1, queryInt(t, direct, "SELECT count(*) FROM "+tbl), "the server did commit, once")
	t.Logf("Run returned: %v", err)
}

// TestConnectionCutBeforeCommitIsStillUnknown: the proxy drops COMMIT
// before the server sees it. The client cannot tell this from the previous
// case, so Run still reports an unknown outcome, although here nothing was
// committed: ErrCommitUnknown means "may or may not".
func TestConnectionCutBeforeCommitIsStillUnknown(t *testing.T) {
	direct := newPool(t, nil)
	tbl := newTable(t, direct, "id int PRIMARY KEY")
	pool, proxy := proxiedPool(t)
	var attempts int
	err := txnpgx.New(pool).Run(testCtx(t), func(ctx context.Context, tx pgx.Tx) error {
		attempts++
		if _, err := tx.Exec(ctx, "INSERT INTO "+tbl+" VALUES (1)"); err != nil {
			return err
		}
		proxy.Arm([]byte("commit"), faultproxy.CutBeforeForward)
		return nil
	})
	require.Equal(t, 1, proxy.Fires())
	require.ErrorIs(t, err, txn.ErrCommitUnknown)
	require.Equal(t, 1, attempts)
	require.Equal(t, 0, queryInt(t, direct, "SELECT count(*) FROM "+tbl))
}

// TestConnectionLostDuringCommitIdempotentRerun: with txn.Idempotent the
// caller promises that running fn twice equals running it once (here an
// INSERT ... ON CONFLICT DO NOTHING), so after the unknown commit Run runs
// fn again, on a fresh connection, and succeeds; the row exists once.
func TestConnectionLostDuringCommitIdempotentRerun(t *testing.T) {
	direct := newPool(t, nil)
	tbl := newTable(t, direct, "id int PRIMARY KEY")
	pool, proxy := proxiedPool(t)
	rec := &recorder{}
	var attempts int
	err := txnpgx.New(pool, txn.WithObserver(rec)).Run(testCtx(t), func(ctx context.Context, tx pgx.Tx) error {
		attempts++
		if _, err := tx.Exec(ctx, "INSERT INTO "+tbl+" VALUES (1) ON CONFLICT DO NOTHING"); err != nil {
			return err
		}
		if attempts == 1 {
			proxy.Arm([]byte("commit"), faultproxy.CutAfterReply)
		}
		return nil
	}, txn.Idempotent())
	require.NoError(t, err)
	require.Equal(t, 2, attempts)
	require.Equal(t, 1, proxy.Fires())
	require.Len(t, rec.retries, 1)
	require.Equal(t, txn.ClassAmbiguous, rec.retries[0].Class)
	require.Equal(t, 1, queryInt(t, direct, "SELECT count(*) FROM "+tbl))
}

// TestConnectionsCutBeforeFnRetried: CutAll kills every pooled connection
// between two Runs; the next Run's first statement fails on a dead
// connection, before any COMMIT, and is retried.
func TestConnectionsCutBeforeFnRetried(t *testing.T) {
	direct := newPool(t, nil)
	tbl := newTable(t, direct, "id int PRIMARY KEY")
	pool, proxy := proxiedPool(t)
	r := txnpgx.New(pool)
	ctx := testCtx(t)
	require.NoError(t, r.Run(ctx, func(ctx context.Context, tx pgx.Tx) error {
		_, err := tx.Exec(ctx, "INSERT INTO "+tbl+" VALUES (1)")
		return err
	}))
	var attempts int
	err := r.Run(ctx, func(ctx context.Context, tx pgx.Tx) error {
		attempts++
		if attempts == 1 {
			proxy.CutAll()
		}
		_, err := tx.Exec(ctx, "INSERT INTO "+tbl+" VALUES (2)")
		return err
	})
	require.NoError(t, err)
	require.Equal(t, 2, attempts)
	require.Equal(t, 2, queryInt(t, direct, "SELECT count(*) FROM "+tbl))
}

// TestDeadlineShorterThanBackoff: a real 40001 is followed by a backoff
// longer than what is left of the context's deadline. Run does not sleep
// into the deadline: it returns while the context is still alive, with an
// error that matches both context.DeadlineExceeded and the 40001.
func TestDeadlineShorterThanBackoff(t *testing.T) {
	pool := newPool(t, nil)
	tbl := counterTable(t, pool)
	r := txnpgx.New(pool, txn.WithBackoff(txn.Constant(time.Hour))).WithBegin(repeatableRead())
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	var attempts int
	err := r.Run(ctx, incrementLosingFirstRace(t, pool, tbl, &attempts))
	require.NoError(t, ctx.Err(), "Run waited for the deadline instead of returning at once")
	require.Equal(t, 1, attempts)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	var pgErr *pgconn.PgError
	require.ErrorAs(t, err, &pgErr)
	require.Equal(t, "40001", pgErr.Code)
	var gu *txn.GiveUpError
	require.ErrorAs(t, err, &gu)
	require.Equal(t, 1, gu.Attempts)
}

// TestBankTransferConservesBalance runs 16 goroutines moving money between
// 4 accounts under SERIALIZABLE, 20 transfers each. Money is neither
// created nor destroyed, no balance goes negative, every account's balance
// matches its ledger, and there is exactly one ledger row per successful
// Run.
func TestBankTransferConservesBalance(t *testing.T) {
	if testing.Short() {
		t.Skip("contention workload; skipped with -short")
	}
	cfg := poolConfig(t)
	cfg.MaxConns = 16
	pool := newPool(t, cfg)
	const accounts, initial, workers, perWorker = 4, 1000, 16, 20
	acct := newTable(t, pool, "id int PRIMARY KEY, balance int NOT NULL CHECK (balance >= 0)")
	ledger := newTable(t, pool, "seq bigserial PRIMARY KEY, from_id int NOT NULL, to_id int NOT NULL, amount int NOT NULL")
	for i := 1; i <= accounts; i++ {
		mustExec(t, pool, "INSERT INTO "+acct+" VALUES ($1, $2)", i, initial)
	}
	rec := &recorder{}
	r := txnpgx.New(pool, txn.MaxAttempts(50), txn.WithObserver(rec)).WithBegin(serializable())
	errInsufficient := errors.New("insufficient funds")

	transfer := func(ctx context.Context, from, to, amount int) error {
		return r.Run(ctx, func(ctx context.Context, tx pgx.Tx) error {
			var bal int
			if err := tx.QueryRow(ctx, "SELECT balance FROM "+acct+" WHERE id = $1", from).Scan(&bal); err != nil {
				return err
			}
			if bal < amount {
				return errInsufficient
			}
			if _, err := tx.Exec(ctx, "UPDATE "+acct+" SET balance = balance - $1 WHERE id = $2", amount, from); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, "UPDATE "+acct+" SET balance = balance + $1 WHERE id = $2", amount, to); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, "INSERT INTO "+ledger+" (from_id, to_id, amount) VALUES ($1, $2, $3)", from, to, amount)
			return err
		})
	}

	ctx := testCtx(t)
	var runs, ok, insufficient, gaveUp atomic.Int64
	var wg sync.WaitGroup
	var failMu sync.Mutex
	var failures []error
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rnd := rand.New(rand.NewPCG(uint64(w), 42))
			for range perWorker {
				from := 1 + rnd.IntN(accounts)
				to := 1 + rnd.IntN(accounts-1)
				if to >= from {
					to++
				}
				runs.Add(1)
				err := transfer(ctx, from, to, 1+rnd.IntN(50))
				var gu *txn.GiveUpError
				switch {
				case err == nil:
					ok.Add(1)
				case errors.Is(err, errInsufficient):
					insufficient.Add(1)
				case errors.As(err, &gu) && errors.Is(err, txn.ErrAttemptsExhausted):
					gaveUp.Add(1)
				default:
					failMu.Lock()
					failures = append(failures, err)
					failMu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	require.Empty(t, failures, "unexpected errors")

	codes := map[string]int{}
	for _, c := range rec.retryCodes() {
		codes[c]++
	}
	t.Logf("runs=%d committed=%d insufficient=%d gave-up=%d retries=%d by SQLSTATE=%v",
		runs.Load(), ok.Load(), insufficient.Load(), gaveUp.Load(), rec.retryCount(), codes)

	require.Equal(t, accounts*initial, queryInt(t, pool, "SELECT sum(balance) FROM "+acct), "money conserved")
	require.Equal(t, int(ok.Load()), queryInt(t, pool, "SELECT count(*) FROM "+ledger), "one ledger row per successful Run")
	require.Equal(t, ok.Load(), rec.commits.Load())
	require.Zero(t, queryInt(t, pool, "SELECT count(*) FROM "+acct+" a WHERE a.balance <> $1 "+
		"- coalesce((SELECT sum(amount) FROM "+ledger+" WHERE from_id = a.id), 0) "+
		"+ coalesce((SELECT sum(amount) FROM "+ledger+" WHERE to_id = a.id), 0)", initial),
		"every balance matches its ledger")
	rec.mu.Lock()
	for _, e := range rec.retries {
		var pgErr *pgconn.PgError
		require.ErrorAs(t, e.Err, &pgErr)
		if pgErr.Code == "55P03" {
			// A probe of the adaptive limit whose lock wait reached its
			// bound; a NOWAIT would say "could not obtain lock".
			require.Equal(t, "canceling statement due to lock timeout", pgErr.Message, "only a probe's lock timeout is retried as 55P03")
			continue
		}
		require.Contains(t, []string{"40001", "40P01"}, pgErr.Code, "only serialization failures, deadlocks and probes' lock timeouts are retried")
	}
	rec.mu.Unlock()
	require.Positive(t, ok.Load())
}

// TestSavepointRollbackKeepsOuterWrites runs nested Run, txn.Savepoint and
// txn.OnCommit against the server: a savepoint that fails is rolled back
// (its row and its OnCommit callback vanish) while the outer transaction's
// writes and a successful nested Run's writes commit, and their callbacks
// run once, after the commit.
func TestSavepointRollbackKeepsOuterWrites(t *testing.T) {
	pool := newPool(t, nil)
	tbl := newTable(t, pool, "id text PRIMARY KEY")
	r := txnpgx.New(pool)
	errNo := errors.New("changed my mind")
	var ran []string
	var committedAtCallback int
	err := r.Run(testCtx(t), func(ctx context.Context, tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "INSERT INTO "+tbl+" VALUES ('outer')"); err != nil {
			return err
		}
		require.NoError(t, txn.OnCommit(ctx, func() {
			ran = append(ran, "outer")
			committedAtCallback = queryInt(t, pool, "SELECT count(*) FROM "+tbl)
		}))
		err := txn.Savepoint(ctx, func(ctx context.Context, sp pgx.Tx) error {
			if _, err := sp.Exec(ctx, "INSERT INTO "+tbl+" VALUES ('savepoint')"); err != nil {
				return err
			}
			require.NoError(t, txn.OnCommit(ctx, func() { ran = append(ran, "savepoint") }))
			return errNo
		})
		require.ErrorIs(t, err, errNo)
		// A failed statement inside a savepoint is undone with it, and the
		// transaction stays usable.
		err = txn.Savepoint(ctx, func(ctx context.Context, sp pgx.Tx) error {
			_, err := sp.Exec(ctx, "INSERT INTO "+tbl+" VALUES ('outer')")
			return err
		})
		require.Equal(t, "23505", sqlState(err))
		err = r.Run(ctx, func(ctx context.Context, tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, "INSERT INTO "+tbl+" VALUES ('nested')"); err != nil {
				return err
			}
			return txn.OnCommit(ctx, func() { ran = append(ran, "nested") })
		})
		require.NoError(t, err)
		require.Empty(t, ran, "no callback before the commit")
		return nil
	})
	require.NoError(t, err)
	require.Equal(t, []string{"outer", "nested"}, ran)
	require.Equal(t, 2, committedAtCallback, "callbacks run after the commit")
	rows, err := pool.Query(context.Background(), "SELECT id FROM "+tbl+" ORDER BY id")
	require.NoError(t, err)
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	require.Equal(t, []string{"nested", "outer"}, ids)
}

// TestRetryableErrorInSavepointRestartsTransaction: a 40001 raised inside a
// nested Run (a savepoint) is not retried there: it dooms the whole
// transaction, even though the outer fn ignores it, and the outermost Run
// runs everything again in a fresh transaction. The outer write is applied
// once and the callback of the failed attempt never runs.
func TestRetryableErrorInSavepointRestartsTransaction(t *testing.T) {
	pool := newPool(t, nil)
	tbl := counterTable(t, pool)
	log := newTable(t, pool, "attempt int PRIMARY KEY")
	r := txnpgx.New(pool).WithBegin(repeatableRead())
	var attempts int
	var callbacks []int
	var nestedErrs []error
	err := r.Run(testCtx(t), func(ctx context.Context, tx pgx.Tx) error {
		attempts++
		n := attempts
		if _, err := tx.Exec(ctx, "INSERT INTO "+log+" VALUES ($1)", n); err != nil {
			return err
		}
		if err := txn.OnCommit(ctx, func() { callbacks = append(callbacks, n) }); err != nil {
			return err
		}
		if n == 1 {
			concurrentUpdate(t, pool, tbl, 1)
		}
		err := r.Run(ctx, func(ctx context.Context, tx pgx.Tx) error {
			_, err := tx.Exec(ctx, "UPDATE "+tbl+" SET v = v + 1 WHERE id = 1")
			return err
		})
		nestedErrs = append(nestedErrs, err)
		return nil // ignore it: the transaction must restart anyway
	})
	require.NoError(t, err)
	require.Equal(t, 2, attempts)
	require.Equal(t, "40001", sqlState(nestedErrs[0]))
	require.NoError(t, nestedErrs[1])
	require.Equal(t, []int{2}, callbacks)
	require.Equal(t, 101, queryInt(t, pool, "SELECT v FROM "+tbl+" WHERE id = 1"))
	require.Equal(t, 2, queryInt(t, pool, "SELECT attempt FROM "+log), "only the committed attempt's write exists")
}

// TestTxOptionsRunnerAndView: begin options given to WithBegin apply to
// every Run of that Runner, and a view's replace them.
func TestTxOptionsRunnerAndView(t *testing.T) {
	pool := newPool(t, nil)
	r := txnpgx.New(pool).WithBegin(txnpgx.TxOptions(pgx.TxOptions{IsoLevel: pgx.Serializable, AccessMode: pgx.ReadOnly}))
	ctx := testCtx(t)
	settings := func(r *txnpgx.Runner) (iso, ro string) {
		t.Helper()
		require.NoError(t, r.Run(ctx, func(ctx context.Context, tx pgx.Tx) error {
			return tx.QueryRow(ctx, "SELECT current_setting('transaction_isolation'), current_setting('transaction_read_only')").Scan(&iso, &ro)
		}))
		return iso, ro
	}
	iso, ro := settings(r)
	require.Equal(t, "serializable", iso)
	require.Equal(t, "on", ro)
	iso, ro = settings(r.WithBegin(txnpgx.TxOptions(pgx.TxOptions{IsoLevel: pgx.RepeatableRead})))
	require.Equal(t, "repeatable read", iso)
	require.Equal(t, "off", ro)

	// A write in the read-only default fails with 25006, permanently.
	tbl := newTable(t, pool, "id int")
	var attempts int
	err := r.Run(ctx, func(ctx context.Context, tx pgx.Tx) error {
		attempts++
		_, err := tx.Exec(ctx, "INSERT INTO "+tbl+" VALUES (1)")
		return err
	})
	require.Equal(t, "25006", sqlState(err))
	require.Equal(t, 1, attempts)
}

// TestConnRunner: a Runner over a single *pgx.Conn retries on that
// connection, and stops at once, without running fn, when the connection
// is closed.
func TestConnRunner(t *testing.T) {
	pool := newPool(t, nil)
	tbl := counterTable(t, pool)
	ctx := testCtx(t)
	conn, err := pgx.Connect(ctx, pgDSN())
	require.NoError(t, err)
	defer conn.Close(context.Background())
	r := txnpgx.New(conn).WithBegin(repeatableRead())
	var attempts int
	require.NoError(t, r.Run(ctx, incrementLosingFirstRace(t, pool, tbl, &attempts)))
	require.Equal(t, 2, attempts)

	require.NoError(t, conn.Close(ctx))
	attempts = 0
	err = r.Run(ctx, func(ctx context.Context, tx pgx.Tx) error {
		attempts++
		return nil
	})
	require.Error(t, err)
	require.Zero(t, attempts)
	var gu *txn.GiveUpError
	require.False(t, errors.As(err, &gu), "a closed connection is not retried: %v", err)
}

// TestFnCommittingTxItself: fn must not end the transaction; if it commits
// it, Run's own commit finds pgx.ErrTxClosed, wrapped as txn.ErrTxDone, and
// reports txn.ErrFnFinishedTx.
func TestFnCommittingTxItself(t *testing.T) {
	pool := newPool(t, nil)
	err := txnpgx.New(pool).Run(testCtx(t), func(ctx context.Context, tx pgx.Tx) error {
		return tx.Commit(ctx)
	})
	require.ErrorIs(t, err, txn.ErrFnFinishedTx)
	require.ErrorIs(t, err, txn.ErrTxDone)
	require.ErrorIs(t, err, pgx.ErrTxClosed)
}

// TestDoReturnsValue: txn.Do over a txnpgx Runner returns fn's result.
func TestDoReturnsValue(t *testing.T) {
	pool := newPool(t, nil)
	n, err := txn.Do(testCtx(t), txnpgx.New(pool), func(ctx context.Context, tx pgx.Tx) (int, error) {
		var n int
		err := tx.QueryRow(ctx, "SELECT 41 + 1").Scan(&n)
		return n, err
	})
	require.NoError(t, err)
	require.Equal(t, 42, n)
}

// TestParallelRunsShareRunner is a smoke test of one Runner used from many
// goroutines with retries going on.
func TestParallelRunsShareRunner(t *testing.T) {
	pool := newPool(t, nil)
	tbl := counterTable(t, pool)
	r := txnpgx.New(pool, txn.MaxAttempts(0)).WithBegin(serializable())
	ctx := testCtx(t)
	const n = 8
	errs := runConcurrently(n, func(int) error {
		return r.Run(ctx, func(ctx context.Context, tx pgx.Tx) error {
			var v int
			if err := tx.QueryRow(ctx, "SELECT v FROM "+tbl+" WHERE id = 1").Scan(&v); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, "UPDATE "+tbl+" SET v = $1 WHERE id = 1", v+1)
			return err
		})
	})
	require.Equal(t, make([]error, n), errs)
	require.Equal(t, n, queryInt(t, pool, "SELECT v FROM "+tbl+" WHERE id = 1"), "no lost update")
}
