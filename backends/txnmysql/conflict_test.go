package txnmysql_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/go-sql-driver/mysql"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/txnkit/txn"
	"github.com/txnkit/txn/backends/txnmysql"
	"github.com/txnkit/txn/backends/txnsql"
	"github.com/txnkit/txn/internal/integrationtest"
)

// TestDeadlockRetried runs two transfers that lock two rows in opposite
// order on two connections. InnoDB breaks the deadlock by rolling one of
// them back with 1213; Run runs that one again, and both transfers are
// applied exactly once.
func TestDeadlockRetried(t *testing.T) {
	db := openDB(t, nil)
	rec := &retryRecorder{}
	oppositeOrderTransfers(t, db, txnmysql.New(db, txn.WithObserver(rec)), rec)
}

// TestTxnsqlWithClassifyDeadlockRetried is TestDeadlockRetried on a Runner
// built by txnsql.New with txnmysql.Classify, as a user of the generic
// database/sql backend would.
func TestTxnsqlWithClassifyDeadlockRetried(t *testing.T) {
	db := openDB(t, nil)
	rec := &retryRecorder{}
	oppositeOrderTransfers(t, db, txnsql.New(db, txn.WithClassifier(txnmysql.Classify), txn.WithObserver(rec)), rec)
}

// oppositeOrderTransfers moves 10 from account 1 to 2 and 30 from 2 to 1 at
// the same time, each transaction locking its source first, and checks
// that r retried the deadlock victim and applied both once. rec must be
// r's observer.
func oppositeOrderTransfers(t *testing.T, db *sql.DB, r *txn.Runner[*sql.Tx], rec *retryRecorder) {
	ctx := testCtx(t)
	acct := createTable(t, db, "id INT PRIMARY KEY, balance INT NOT NULL")
	ledger := createTable(t, db, "name VARCHAR(16) PRIMARY KEY")
	_, err := db.ExecContext(ctx, "INSERT INTO "+acct+" VALUES (1, 100), (2, 100)")
	require.NoError(t, err)

	bar := integrationtest.NewBarrier(2)
	var calls [2]atomic.Int32
	transfer := func(i int, name string, from, to, amount int) error {
		return r.Run(ctx, func(ctx context.Context, tx *sql.Tx) error {
			n := calls[i].Add(1)
			if _, err := tx.ExecContext(ctx, "UPDATE "+acct+" SET balance = balance - ? WHERE id = ?", amount, from); err != nil {
				return err
			}
			if n == 1 {
				// Both transactions hold their first row now.
				if err := bar.Wait(ctx); err != nil {
					return txn.Permanent(err)
				}
			}
			if _, err := tx.ExecContext(ctx, "UPDATE "+acct+" SET balance = balance + ? WHERE id = ?", amount, to); err != nil {
				return err
			}
			_, err := tx.ExecContext(ctx, "INSERT INTO "+ledger+" VALUES (?)", name)
			return err
		})
	}

	var wg sync.WaitGroup
	errs := make([]error, 2)
	wg.Add(2)
	go func() { defer wg.Done(); errs[0] = transfer(0, "a", 1, 2, 10) }()
	go func() { defer wg.Done(); errs[1] = transfer(1, "b", 2, 1, 30) }()
	wg.Wait()
	require.NoError(t, errs[0])
	require.NoError(t, errs[1])

	assert.Equal(t, 1, rec.retriesWith(1213), "exactly one transaction lost the deadlock: %v", rec.events())
	assert.Equal(t, int32(3), calls[0].Load()+calls[1].Load(), "the loser ran twice, the winner once")
	assert.Equal(t, 2, count(t, db, ledger, ""))
	assert.Equal(t, 1, count(t, db, acct, "id = 1 AND balance = 120"))
	assert.Equal(t, 1, count(t, db, acct, "id = 2 AND balance = 80"))
}

// TestLockWaitTimeoutRolledBackBeforeRetry makes fn wait for a row locked by
// another connection until innodb_lock_wait_timeout (1s) expires. MariaDB
// rolls back only the waiting statement (1205), leaving the transaction
// open with the row fn wrote before it; the test sees that row still there,
// then checks that Run rolled the whole transaction back before the second
// attempt started, and that only the second attempt's row was committed.
func TestLockWaitTimeoutRolledBackBeforeRetry(t *testing.T) {
	admin := openDB(t, nil)
	db := openDB(t, map[string]string{"innodb_lock_wait_timeout": "1"})
	ctx := testCtx(t)
	hot := createRowTable(t, ctx, admin, "id INT PRIMARY KEY, v INT NOT NULL")
	marks := createTable(t, admin, "attempt INT PRIMARY KEY, conn BIGINT NOT NULL")

	// The blocker holds the row lock until the first attempt has timed out.
	blocker := holdLocks(ctx, admin, "UPDATE "+hot+" SET v = v + 100 WHERE id = 1")

	rec := &retryRecorder{}
	r := txnmysql.New(db, txn.WithObserver(rec))
	var (
		calls          int
		firstErr       error
		marksSeen      int
		firstStillOpen = true
		blockerErr     error
		blockerEnded   bool
	)
	err := r.Run(ctx, func(ctx context.Context, tx *sql.Tx) error {
		calls++
		id, err := connectionID(ctx, tx)
		if err != nil {
			return err
		}
		if calls == 1 {
			select {
			case <-blocker.locked:
			case <-ctx.Done():
				return txn.Permanent(ctx.Err())
			}
		} else {
			// The first attempt's transaction must be over: nobody holds
			// the lock on the mark it inserted any more.
			l, err := rowLocked(ctx, admin, marks, "attempt = 1")
			if err != nil {
				return txn.Permanent(err)
			}
			firstStillOpen = l
			if !blockerEnded {
				blockerErr, blockerEnded = <-blocker.done, true
			}
		}
		if _, err := tx.ExecContext(ctx, "INSERT INTO "+marks+" VALUES (?, ?)", calls, id); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, "UPDATE "+hot+" SET v = v + 1 WHERE id = 1")
		if calls == 1 {
			firstErr = err
			// The server rolled back the UPDATE only: this transaction
			// still sees its own mark.
			if qerr := tx.QueryRowContext(ctx, "SELECT COUNT(*) FROM "+marks+" WHERE attempt = 1").Scan(&marksSeen); qerr != nil {
				return txn.Permanent(qerr)
			}
			close(blocker.release)
		}
		return err
	})
	require.NoError(t, err)
	require.NoError(t, blockerErr)

	assert.Equal(t, uint16(1205), errNumber(firstErr), "first attempt: %v", firstErr)
	assert.Equal(t, 1, marksSeen, "after 1205 the transaction was still open with its earlier write")
	assert.False(t, firstStillOpen, "the first attempt's transaction was rolled back before the second began")
	assert.Equal(t, 2, calls)
	assert.Equal(t, 1, rec.retriesWith(1205))
	assert.Equal(t, 1, count(t, admin, marks, ""), "one mark committed")
	assert.Equal(t, 1, count(t, admin, marks, "attempt = 2"), "and it is the second attempt's")
	assert.Equal(t, 1, count(t, admin, hot, "id = 1 AND v = 1"), "the update applied once, the blocker's not at all")
}

// TestDuplicateKeyPermanent makes fn insert a key that another connection
// inserted and then committed while fn waited for it: 1062 is returned as
// it is, fn ran once, and errors.As finds the *mysql.MySQLError.
func TestDuplicateKeyPermanent(t *testing.T) {
	db := openDB(t, nil)
	ctx := testCtx(t)
	tbl := createTable(t, db, "id INT PRIMARY KEY, who VARCHAR(8) NOT NULL")

	bar := integrationtest.NewBarrier(2)
	ids := make(chan int64, 1)
	holderDone := make(chan error, 1)
	go func() {
		holderDone <- func() error {
			tx, err := db.BeginTx(ctx, nil)
			if err != nil {
				return err
			}
			defer func() { _ = tx.Rollback() }()
			if _, err := tx.ExecContext(ctx, "INSERT INTO "+tbl+" VALUES (1, 'holder')"); err != nil {
				return err
			}
			if err := bar.Wait(ctx); err != nil {
				return err
			}
			// Commit once the Runner's INSERT waits for this one's lock.
			var id int64
			select {
			case id = <-ids:
			case <-ctx.Done():
				return ctx.Err()
			}
			if err := waitFor(ctx, trxPoll, func() (bool, error) { return lockWaiting(ctx, db, id) }); err != nil {
				return err
			}
			return tx.Commit()
		}()
	}()

	rec := &retryRecorder{}
	r := txnmysql.New(db, txn.WithObserver(rec))
	calls := 0
	err := r.Run(ctx, func(ctx context.Context, tx *sql.Tx) error {
		calls++
		id, err := connectionID(ctx, tx)
		if err != nil {
			return err
		}
		if err := bar.Wait(ctx); err != nil {
			return txn.Permanent(err)
		}
		ids <- id
		_, err = tx.ExecContext(ctx, "INSERT INTO "+tbl+" VALUES (1, 'runner')")
		return err
	})
	require.NoError(t, <-holderDone)
	require.Error(t, err)

	var me *mysql.MySQLError
	require.True(t, errors.As(err, &me), "errors.As(%v, *mysql.MySQLError)", err)
	assert.Equal(t, uint16(1062), me.Number)
	var gu *txn.GiveUpError
	assert.False(t, errors.As(err, &gu), "a permanent error is returned as it is")
	assert.Equal(t, 1, calls)
	assert.Empty(t, rec.events())
	assert.Equal(t, 1, count(t, db, tbl, "who = 'holder'"))
	assert.Equal(t, 1, count(t, db, tbl, ""))
}

// TestSnapshotIsolationRecordChangedRetried provokes MariaDB's 1020 under
// innodb_snapshot_isolation=ON: fn reads a counter, another connection
// commits a change to it, fn's UPDATE fails and Run re-runs fn, which reads
// the new value. No update is lost.
func TestSnapshotIsolationRecordChangedRetried(t *testing.T) {
	admin := openDB(t, nil)
	ctx := testCtx(t)
	skipWithoutServerVar(t, ctx, admin, "innodb_snapshot_isolation", "MariaDB 10.6.18+, 10.11.8+, 11.x")
	db := openDB(t, map[string]string{"innodb_snapshot_isolation": "ON"})
	ctr := createRowTable(t, ctx, admin, "id INT PRIMARY KEY, n INT NOT NULL")

	bar := integrationtest.NewBarrier(2)
	otherDone := make(chan error, 1)
	go func() {
		otherDone <- func() error {
			if err := bar.Wait(ctx); err != nil {
				return err
			}
			_, err := admin.ExecContext(ctx, "UPDATE "+ctr+" SET n = n + 10 WHERE id = 1")
			return err
		}()
	}()

	rec := &retryRecorder{}
	r := txnmysql.New(db, txn.WithObserver(rec))
	calls := 0
	err := r.Run(ctx, func(ctx context.Context, tx *sql.Tx) error {
		calls++
		var n int
		if err := tx.QueryRowContext(ctx, "SELECT n FROM "+ctr+" WHERE id = 1").Scan(&n); err != nil {
			return err
		}
		if calls == 1 {
			if err := bar.Wait(ctx); err != nil {
				return txn.Permanent(err)
			}
			if err := <-otherDone; err != nil {
				return txn.Permanent(err)
			}
		}
		_, err := tx.ExecContext(ctx, "UPDATE "+ctr+" SET n = ? WHERE id = 1", n+1)
		return err
	})
	require.NoError(t, err)
	assert.Equal(t, 2, calls)
	assert.Equal(t, 1, rec.retriesWith(1020), "retries: %v", rec.events())
	assert.Equal(t, 1, count(t, admin, ctr, "n = 11"), "both increments kept")
}

// TestLockNowaitRetriedWhenOptedIn makes a locking read with NOWAIT find its
// row locked by another connection. MySQL reports 3572, MariaDB 1205; with
// ClassifyOptions.LockWaitNowait both are retried once the row is free.
func TestLockNowaitRetriedWhenOptedIn(t *testing.T) {
	admin := openDB(t, nil)
	db := openDB(t, nil)
	ctx := testCtx(t)
	tbl := createRowTable(t, ctx, admin, "id INT PRIMARY KEY, v INT NOT NULL")

	holder := holdLocks(ctx, admin, "SELECT v FROM "+tbl+" WHERE id = 1 FOR UPDATE")

	rec := &retryRecorder{}
	r := txnmysql.New(db, txn.WithClassifier(txnmysql.Classifier(txnmysql.ClassifyOptions{LockWaitNowait: true})), txn.WithObserver(rec))
	calls := 0
	var firstErr error
	err := r.Run(ctx, func(ctx context.Context, tx *sql.Tx) error {
		calls++
		if calls == 1 {
			select {
			case <-holder.locked:
			case err := <-holder.done:
				return txn.Permanent(fmt.Errorf("holder: %w", err))
			}
		} else if err := <-holder.done; err != nil {
			return txn.Permanent(err)
		}
		_, err := tx.ExecContext(ctx, "SELECT v FROM "+tbl+" WHERE id = 1 FOR UPDATE NOWAIT")
		if calls == 1 {
			firstErr = err
			close(holder.release)
			return err
		}
		if err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, "UPDATE "+tbl+" SET v = v + 1 WHERE id = 1")
		return err
	})
	require.NoError(t, err)
	n := errNumber(firstErr)
	assert.True(t, n == 3572 || n == 1205, "NOWAIT on a locked row: %v", firstErr)
	t.Logf("server reported NOWAIT with error %d", n)
	assert.Equal(t, 2, calls)
	assert.Len(t, rec.events(), 1)
	assert.Equal(t, 1, count(t, admin, tbl, "v = 1"))
}

// TestStatementTimeoutRetriedOnlyWhenOptedIn makes a statement wait for a
// locked row longer than MariaDB's max_statement_time allows (1969):
// Classify returns it at once, Classifier(StatementTimeout) retries it.
func TestStatementTimeoutRetriedOnlyWhenOptedIn(t *testing.T) {
	admin := openDB(t, nil)
	ctx := testCtx(t)
	skipWithoutServerVar(t, ctx, admin, "max_statement_time", "MariaDB only")
	db := openDB(t, map[string]string{"max_statement_time": "0.3"})
	tbl := createRowTable(t, ctx, admin, "id INT PRIMARY KEY, v INT NOT NULL")

	// hold locks the row until the returned function is called.
	hold := func(t *testing.T) (unlock func()) {
		tx, err := admin.BeginTx(ctx, nil)
		require.NoError(t, err)
		_, err = tx.ExecContext(ctx, "UPDATE "+tbl+" SET v = v + 100 WHERE id = 1")
		require.NoError(t, err)
		return func() { _ = tx.Rollback() }
	}
	update := func(ctx context.Context, tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, "UPDATE "+tbl+" SET v = v + 1 WHERE id = 1")
		return err
	}

	t.Run("Classify", func(t *testing.T) {
		unlock := hold(t)
		defer unlock()
		calls := 0
		err := txnmysql.New(db).Run(ctx, func(ctx context.Context, tx *sql.Tx) error {
			calls++
			return update(ctx, tx)
		})
		assert.Equal(t, uint16(1969), errNumber(err), "%v", err)
		assert.Equal(t, 1, calls)
	})
	t.Run("StatementTimeout", func(t *testing.T) {
		unlock := hold(t)
		rec := &retryRecorder{}
		r := txnmysql.New(db, txn.WithClassifier(txnmysql.Classifier(txnmysql.ClassifyOptions{StatementTimeout: true})), txn.WithObserver(rec))
		calls := 0
		err := r.Run(ctx, func(ctx context.Context, tx *sql.Tx) error {
			calls++
			err := update(ctx, tx)
			if calls == 1 {
				unlock()
			}
			return err
		})
		require.NoError(t, err)
		assert.Equal(t, 2, calls)
		assert.Equal(t, 1, rec.retriesWith(1969))
	})
	assert.Equal(t, 1, count(t, admin, tbl, "v = 1"))
}

// TestTxOptionsIsolationAndReadOnly checks by their effects that TxOptions
// on the Runner and per call reach the server: SERIALIZABLE makes plain
// reads lock, READ COMMITTED sees a change another connection committed
// meanwhile, REPEATABLE READ does not, and a write in a read-only
// transaction is a permanent error (1792). An isolation level the driver
// does not support fails before fn runs.
func TestTxOptionsIsolationAndReadOnly(t *testing.T) {
	admin := openDB(t, nil)
	db := openDB(t, nil)
	ctx := testCtx(t)
	tbl := createRowTable(t, ctx, admin, "id INT PRIMARY KEY, v INT NOT NULL")
	r := txnmysql.New(db).WithBegin(txnmysql.TxOptions(sql.TxOptions{Isolation: sql.LevelSerializable}))

	// locked reports whether another connection finds row 1 locked.
	locked := func(ctx context.Context) (bool, error) {
		tx, err := admin.BeginTx(ctx, nil)
		if err != nil {
			return false, err
		}
		defer func() { _ = tx.Rollback() }()
		_, err = tx.ExecContext(ctx, "SELECT v FROM "+tbl+" WHERE id = 1 FOR UPDATE NOWAIT")
		switch errNumber(err) {
		case 0:
			return false, err
		case 1205, 3572:
			return true, nil
		}
		return false, err
	}
	// rereads reads v, lets another connection commit v+1, reads again and
	// reports whether the second read saw the change.
	rereads := func(ctx context.Context, tx *sql.Tx) (bool, error) {
		var before, after int
		if err := tx.QueryRowContext(ctx, "SELECT v FROM "+tbl+" WHERE id = 1").Scan(&before); err != nil {
			return false, err
		}
		if _, err := admin.ExecContext(ctx, "UPDATE "+tbl+" SET v = v + 1 WHERE id = 1"); err != nil {
			return false, err
		}
		if err := tx.QueryRowContext(ctx, "SELECT v FROM "+tbl+" WHERE id = 1").Scan(&after); err != nil {
			return false, err
		}
		return after != before, nil
	}

	t.Run("RunnerSerializable", func(t *testing.T) {
		isLocked, err := txn.Do(ctx, r, func(ctx context.Context, tx *sql.Tx) (bool, error) {
			var v int
			if err := tx.QueryRowContext(ctx, "SELECT v FROM "+tbl+" WHERE id = 1").Scan(&v); err != nil {
				return false, err
			}
			return locked(ctx)
		})
		require.NoError(t, err)
		assert.True(t, isLocked, "a plain read locks the row under SERIALIZABLE")
	})
	t.Run("ViewReadCommitted", func(t *testing.T) {
		saw, err := txn.Do(ctx, r.WithBegin(txnmysql.TxOptions(sql.TxOptions{Isolation: sql.LevelReadCommitted})), rereads)
		require.NoError(t, err)
		assert.True(t, saw, "READ COMMITTED sees the committed change")
	})
	t.Run("ViewRepeatableReadReadOnly", func(t *testing.T) {
		calls := 0
		var saw bool
		err := r.WithBegin(txnmysql.TxOptions(sql.TxOptions{Isolation: sql.LevelRepeatableRead, ReadOnly: true})).Run(ctx, func(ctx context.Context, tx *sql.Tx) (err error) {
			calls++
			if saw, err = rereads(ctx, tx); err != nil {
				return err
			}
			_, err = tx.ExecContext(ctx, "INSERT INTO "+tbl+" VALUES (2, 0)")
			return err
		})
		assert.False(t, saw, "REPEATABLE READ keeps its snapshot")
		assert.Equal(t, uint16(1792), errNumber(err), "write in a read-only transaction: %v", err)
		assert.Equal(t, 1, calls)
		assert.Equal(t, 0, count(t, admin, tbl, "id = 2"))
	})
	t.Run("UnsupportedLevel", func(t *testing.T) {
		calls := 0
		err := r.WithBegin(txnmysql.TxOptions(sql.TxOptions{Isolation: sql.LevelSnapshot})).Run(ctx, func(ctx context.Context, tx *sql.Tx) error {
			calls++
			return nil
		})
		assert.ErrorContains(t, err, "isolation level")
		assert.Equal(t, 0, calls)

		err = r.WithBegin(txn.NewBeginOption[*sql.Tx]("txnsqlite", sql.TxOptions{})).Run(ctx, func(ctx context.Context, tx *sql.Tx) error { return nil })
		assert.ErrorIs(t, err, txn.ErrBadOption)
		assert.ErrorContains(t, err, "a begin option built by txnsqlite was given to a txnmysql Runner")
	})
}
