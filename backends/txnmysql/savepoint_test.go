package txnmysql_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/txnkit/txn"
	"github.com/txnkit/txn/backends/txnmysql"
	"github.com/txnkit/txn/internal/integrationtest"
)

var errInner = errors.New("inner step failed")

// names returns the name column of table, sorted.
func names(t *testing.T, db *sql.DB, table string) []string {
	t.Helper()
	rows, err := db.QueryContext(context.Background(), "SELECT name FROM "+table+" ORDER BY name")
	require.NoError(t, err)
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		require.NoError(t, rows.Scan(&s))
		out = append(out, s)
	}
	require.NoError(t, rows.Err())
	return out
}

// insertName inserts name into table with the transaction carried by ctx.
func insertName(ctx context.Context, table, name string) error {
	tx, ok := txn.TxFrom[*sql.Tx](ctx)
	if !ok {
		return txn.Permanent(errors.New("no transaction in context"))
	}
	_, err := tx.ExecContext(ctx, "INSERT INTO "+table+" (name) VALUES (?)", name)
	return err
}

// TestSavepointRollbackKeepsOuterWrites rolls back a txn.Savepoint inside a
// transaction that commits: the outer writes and those of a released
// savepoint stay, the rolled-back savepoint's write is gone (already inside
// the transaction), and only the OnCommit callbacks outside the rolled-back
// savepoint run.
func TestSavepointRollbackKeepsOuterWrites(t *testing.T) {
	db := openDB(t, nil)
	ctx := testCtx(t)
	tbl := createTable(t, db, "name VARCHAR(32) PRIMARY KEY")
	r := txnmysql.New(db)

	var ran []string
	calls := 0
	err := r.Run(ctx, func(ctx context.Context, tx *sql.Tx) error {
		calls++
		if err := insertName(ctx, tbl, "outer-1"); err != nil {
			return err
		}
		if err := txn.OnCommit(ctx, func() { ran = append(ran, "outer") }); err != nil {
			return err
		}
		err := txn.Savepoint(ctx, func(ctx context.Context, tx *sql.Tx) error {
			if err := insertName(ctx, tbl, "inner-rolled-back"); err != nil {
				return err
			}
			if err := txn.OnCommit(ctx, func() { ran = append(ran, "inner-rolled-back") }); err != nil {
				return err
			}
			return errInner
		})
		if !errors.Is(err, errInner) {
			return txn.Permanent(fmt.Errorf("savepoint returned %v, want errInner", err))
		}
		var n int
		if err := tx.QueryRowContext(ctx, "SELECT COUNT(*) FROM "+tbl+" WHERE name = 'inner-rolled-back'").Scan(&n); err != nil {
			return err
		}
		if n != 0 {
			return txn.Permanent(errors.New("the rolled-back savepoint's row is still visible in the transaction"))
		}
		err = txn.Savepoint(ctx, func(ctx context.Context, tx *sql.Tx) error {
			if err := insertName(ctx, tbl, "inner-kept"); err != nil {
				return err
			}
			return txn.OnCommit(ctx, func() { ran = append(ran, "inner-kept") })
		})
		if err != nil {
			return err
		}
		return insertName(ctx, tbl, "outer-2")
	})
	require.NoError(t, err)
	assert.Equal(t, 1, calls)
	assert.Equal(t, []string{"inner-kept", "outer-1", "outer-2"}, names(t, db, tbl))
	assert.Equal(t, []string{"outer", "inner-kept"}, ran)
}

// TestSavepointRollbackNestedLevels rolls back a savepoint two levels deep
// while its parent savepoint is released, and a parent savepoint whose
// child was released: each rollback undoes exactly its level and below.
func TestSavepointRollbackNestedLevels(t *testing.T) {
	db := openDB(t, nil)
	ctx := testCtx(t)
	tbl := createTable(t, db, "name VARCHAR(32) PRIMARY KEY")
	r := txnmysql.New(db)

	var ran []string
	on := func(ctx context.Context, name string) error {
		return txn.OnCommit(ctx, func() { ran = append(ran, name) })
	}
	err := r.Run(ctx, func(ctx context.Context, tx *sql.Tx) error {
		// Level 1 kept, level 2 rolled back.
		err := txn.Savepoint(ctx, func(ctx context.Context, tx *sql.Tx) error {
			if err := insertName(ctx, tbl, "a1-kept"); err != nil {
				return err
			}
			if err := on(ctx, "a1"); err != nil {
				return err
			}
			err := txn.Savepoint(ctx, func(ctx context.Context, tx *sql.Tx) error {
				if err := insertName(ctx, tbl, "a2-rolled-back"); err != nil {
					return err
				}
				if err := on(ctx, "a2"); err != nil {
					return err
				}
				return errInner
			})
			if !errors.Is(err, errInner) {
				return txn.Permanent(fmt.Errorf("level 2 returned %v", err))
			}
			return insertName(ctx, tbl, "a1-after")
		})
		if err != nil {
			return err
		}
		// Level 2 released, then level 1 rolled back: both go.
		err = txn.Savepoint(ctx, func(ctx context.Context, tx *sql.Tx) error {
			if err := insertName(ctx, tbl, "b1-rolled-back"); err != nil {
				return err
			}
			if err := txn.Savepoint(ctx, func(ctx context.Context, tx *sql.Tx) error {
				if err := insertName(ctx, tbl, "b2-rolled-back"); err != nil {
					return err
				}
				return on(ctx, "b2")
			}); err != nil {
				return err
			}
			return errInner
		})
		if !errors.Is(err, errInner) {
			return txn.Permanent(fmt.Errorf("level 1 returned %v", err))
		}
		return insertName(ctx, tbl, "outer")
	})
	require.NoError(t, err)
	assert.Equal(t, []string{"a1-after", "a1-kept", "outer"}, names(t, db, tbl))
	assert.Equal(t, []string{"a1"}, ran)
}

// TestNestedRunUsesSavepoint calls Run inside fn on the same Runner: the
// nested Run joins the outer transaction through a savepoint, a failing one
// is rolled back to it without harming the outer transaction, a successful
// one becomes part of the outer commit, and nothing is retried.
func TestNestedRunUsesSavepoint(t *testing.T) {
	db := openDB(t, nil)
	ctx := testCtx(t)
	tbl := createTable(t, db, "name VARCHAR(32) PRIMARY KEY")
	rec := &retryRecorder{}
	r := txnmysql.New(db, txn.WithObserver(rec))

	var ran []string
	outerCalls, nestedCalls := 0, 0
	err := r.Run(ctx, func(ctx context.Context, outerTx *sql.Tx) error {
		outerCalls++
		if err := insertName(ctx, tbl, "outer"); err != nil {
			return err
		}
		err := r.Run(ctx, func(ctx context.Context, tx *sql.Tx) error {
			nestedCalls++
			if tx != outerTx {
				return txn.Permanent(errors.New("nested Run got another transaction"))
			}
			if err := insertName(ctx, tbl, "nested-failed"); err != nil {
				return err
			}
			if err := txn.OnCommit(ctx, func() { ran = append(ran, "nested-failed") }); err != nil {
				return err
			}
			return errInner
		})
		if !errors.Is(err, errInner) {
			return txn.Permanent(fmt.Errorf("nested Run returned %v", err))
		}
		return r.Run(ctx, func(ctx context.Context, tx *sql.Tx) error {
			nestedCalls++
			if err := insertName(ctx, tbl, "nested-kept"); err != nil {
				return err
			}
			if err := txn.OnCommit(ctx, func() { ran = append(ran, "nested-kept") }); err != nil {
				return err
			}
			// A Run two levels deep that fails leaves its parent usable.
			err := r.Run(ctx, func(ctx context.Context, tx *sql.Tx) error {
				nestedCalls++
				if err := insertName(ctx, tbl, "nested-nested-failed"); err != nil {
					return err
				}
				return errInner
			})
			if errors.Is(err, errInner) {
				return nil
			}
			return txn.Permanent(fmt.Errorf("nested nested Run returned %v", err))
		})
	})
	require.NoError(t, err)
	assert.Equal(t, 1, outerCalls)
	assert.Equal(t, 3, nestedCalls)
	assert.Empty(t, rec.events())
	assert.Equal(t, []string{"nested-kept", "outer"}, names(t, db, tbl))
	assert.Equal(t, []string{"nested-kept"}, ran)

	// A nested Run accepts call options and honours none (it joins); an
	// invalid one is refused; one on another Runner is refused.
	err = r.Run(ctx, func(ctx context.Context, tx *sql.Tx) error {
		if err := r.Run(ctx, func(context.Context, *sql.Tx) error { return nil }, txn.MaxAttempts(1), txn.Keys("k")); err != nil {
			return txn.Permanent(fmt.Errorf("nested Run with options returned %v", err))
		}
		if err := r.Run(ctx, func(context.Context, *sql.Tx) error { return nil }, txn.MaxAttempts(-1)); !errors.Is(err, txn.ErrBadOption) {
			return txn.Permanent(fmt.Errorf("nested Run with an invalid option returned %v", err))
		}
		other := txnmysql.New(db)
		if err := other.Run(ctx, func(context.Context, *sql.Tx) error { return nil }); !errors.Is(err, txn.ErrForeignRunner) {
			return txn.Permanent(fmt.Errorf("nested Run on another Runner returned %v", err))
		}
		return nil
	})
	require.NoError(t, err)
}

// TestNestedRunDeadlockRestartsWholeTransaction makes a nested Run lose a
// real deadlock against another connection. MySQL has rolled back the
// whole transaction, savepoints included, so the error propagates unchanged
// and the outermost Run restarts everything, even though the outer fn
// swallows the nested error. Every write is applied exactly once.
func TestNestedRunDeadlockRestartsWholeTransaction(t *testing.T) {
	db := openDB(t, nil)
	ctx := testCtx(t)
	ledger := createTable(t, db, "name VARCHAR(32) PRIMARY KEY")
	acct, bar, otherDone := startDeadlockWinner(t, ctx, db)

	rec := &retryRecorder{}
	r := txnmysql.New(db, txn.WithObserver(rec))
	var mu sync.Mutex
	var nestedErrs []error
	outerCalls := 0
	err := r.Run(ctx, func(ctx context.Context, tx *sql.Tx) error {
		outerCalls++
		attempt := outerCalls
		if err := insertName(ctx, ledger, "outer"); err != nil {
			return err
		}
		nerr := nestedTransfer(ctx, r, acct, bar, attempt == 1)
		mu.Lock()
		nestedErrs = append(nestedErrs, nerr)
		mu.Unlock()
		// Swallowing the error must not commit half of the work.
		return nil
	})
	require.NoError(t, err)
	require.NoError(t, <-otherDone)

	require.Len(t, nestedErrs, 2)
	assert.Equal(t, uint16(1213), errNumber(nestedErrs[0]), "the nested Run saw the deadlock unchanged: %v", nestedErrs[0])
	assert.NoError(t, nestedErrs[1])
	assert.Equal(t, 2, outerCalls)
	assert.Equal(t, 1, rec.retriesWith(1213))
	assert.Equal(t, []string{"outer"}, names(t, db, ledger))
	assert.Equal(t, 1, count(t, db, acct, "id = 1 AND balance = 120"))
	assert.Equal(t, 1, count(t, db, acct, "id = 2 AND balance = 80"))
}

// startDeadlockWinner creates accounts 1 and 2 (balance 100 each) in a new
// table and starts, on another connection, the transaction that will win a
// deadlock against a Runner's nested Run: it changes many rows first (so
// that InnoDB, which rolls back the transaction that changed fewer rows,
// picks the Runner's as the victim), takes account 2, waits at bar for the
// Runner to take account 1, then asks for account 1 and commits moving 30
// from 2 to 1. It returns the table, bar, and the transaction's result.
func startDeadlockWinner(t *testing.T, ctx context.Context, db *sql.DB) (string, *integrationtest.Barrier, <-chan error) {
	t.Helper()
	acct := createTable(t, db, "id INT PRIMARY KEY, balance INT NOT NULL")
	bulk := createTable(t, db, "id INT PRIMARY KEY")
	_, err := db.ExecContext(ctx, "INSERT INTO "+acct+" VALUES (1, 100), (2, 100)")
	require.NoError(t, err)
	bar := integrationtest.NewBarrier(2)
	done := make(chan error, 1)
	go func() {
		done <- func() error {
			tx, err := db.BeginTx(ctx, nil)
			if err != nil {
				return err
			}
			defer func() { _ = tx.Rollback() }()
			vals := make([]string, 500)
			for i := range vals {
				vals[i] = fmt.Sprintf("(%d)", i)
			}
			if _, err := tx.ExecContext(ctx, "INSERT INTO "+bulk+" VALUES "+strings.Join(vals, ",")); err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, "UPDATE "+acct+" SET balance = balance - 30 WHERE id = 2"); err != nil {
				return err
			}
			if err := bar.Wait(ctx); err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, "UPDATE "+acct+" SET balance = balance + 30 WHERE id = 1"); err != nil {
				return err
			}
			return tx.Commit()
		}()
	}()
	return acct, bar, done
}

// nestedTransfer runs, through r inside the caller's transaction, a nested
// Run that moves 10 from account 1 to account 2 of acct; with meet, it
// waits at bar between its two updates, which deadlocks it against
// startDeadlockWinner's transaction.
func nestedTransfer(ctx context.Context, r *txnmysql.Runner, acct string, bar *integrationtest.Barrier, meet bool) error {
	return r.Run(ctx, func(ctx context.Context, tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, "UPDATE "+acct+" SET balance = balance - 10 WHERE id = 1"); err != nil {
			return err
		}
		if meet {
			if err := bar.Wait(ctx); err != nil {
				return txn.Permanent(err)
			}
		}
		_, err := tx.ExecContext(ctx, "UPDATE "+acct+" SET balance = balance + 10 WHERE id = 2")
		return err
	})
}
