package txnmysql_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/txnkit/txn"
	"github.com/txnkit/txn/backends/txnmysql"
	"github.com/txnkit/txn/internal/faultproxy"
	"github.com/txnkit/txn/internal/integrationtest"
)

// TestSwallowedDeadlockCommitsNothingOfTheFailedAttempt: a nested Run loses
// a real deadlock (1213), fn ignores its error and goes on writing. InnoDB
// has rolled the whole transaction back, so without care the statements fn
// runs afterwards would execute in autocommit mode and stay, leaving a log
// of [1:after 2:before 2:after]. Run rolls the transaction back as soon as
// the nested Run sees the deadlock: the later statement fails on the ended
// transaction, and only the retried attempt's rows are there.
func TestSwallowedDeadlockCommitsNothingOfTheFailedAttempt(t *testing.T) {
	db := openDB(t, nil)
	ctx := testCtx(t)
	logTbl := createTable(t, db, "name VARCHAR(32) PRIMARY KEY")
	acct, bar, otherDone := startDeadlockWinner(t, ctx, db)

	r := txnmysql.New(db)
	attempt := 0
	var nestedErrs, afterErrs []error
	err := r.Run(ctx, func(ctx context.Context, tx *sql.Tx) error {
		attempt++
		n := attempt
		if _, err := tx.ExecContext(ctx, "INSERT INTO "+logTbl+" VALUES (?)", fmt.Sprintf("%d:before", n)); err != nil {
			return err
		}
		nerr := nestedTransfer(ctx, r, acct, bar, n == 1)
		nestedErrs = append(nestedErrs, nerr)
		// fn swallows the nested error and goes on writing.
		_, aerr := tx.ExecContext(ctx, "INSERT INTO "+logTbl+" VALUES (?)", fmt.Sprintf("%d:after", n))
		afterErrs = append(afterErrs, aerr)
		return nil
	})
	require.NoError(t, err)
	require.NoError(t, <-otherDone)
	require.Equal(t, 2, attempt)
	assert.Equal(t, uint16(1213), errNumber(nestedErrs[0]), "the nested Run saw the deadlock: %v", nestedErrs[0])
	assert.ErrorIs(t, afterErrs[0], sql.ErrTxDone, "the statement after the deadlock found the transaction ended")
	assert.NoError(t, afterErrs[1])
	assert.Equal(t, []string{"2:after", "2:before"}, names(t, db, logTbl), "nothing of the failed attempt stayed")
	assert.Equal(t, 1, count(t, db, acct, "id = 1 AND balance = 120"))
	assert.Equal(t, 1, count(t, db, acct, "id = 2 AND balance = 80"))
}

// TestRunInOnCommitStartsNewTransaction: a Run started from an OnCommit
// callback with fn's context starts a new transaction of its own; the
// ended one is unreachable through that context.
func TestRunInOnCommitStartsNewTransaction(t *testing.T) {
	db := openDB(t, nil)
	ctx := testCtx(t)
	tbl := createTable(t, db, "name VARCHAR(32) PRIMARY KEY")
	r := txnmysql.New(db)
	var txFromOK bool
	var onCommitErr, savepointErr, runErr error
	err := r.Run(ctx, func(ctx context.Context, tx *sql.Tx) error {
		if err := insertName(ctx, tbl, "order"); err != nil {
			return err
		}
		return txn.OnCommit(ctx, func() {
			_, txFromOK = txn.TxFrom[*sql.Tx](ctx)
			onCommitErr = txn.OnCommit(ctx, func() {})
			savepointErr = txn.Savepoint(ctx, func(context.Context, *sql.Tx) error { return nil })
			runErr = r.Run(ctx, func(ctx context.Context, tx *sql.Tx) error { return insertName(ctx, tbl, "audit") })
		})
	})
	require.NoError(t, err)
	assert.False(t, txFromOK)
	assert.ErrorIs(t, onCommitErr, txn.ErrNoTransaction)
	assert.ErrorIs(t, savepointErr, txn.ErrNoTransaction)
	require.NoError(t, runErr)
	assert.Equal(t, []string{"audit", "order"}, names(t, db, tbl))
}

// TestFnThatCommitsIsNeverRerun: fn commits the transaction itself; see
// integrationtest.FnThatCommitsIsNeverRerun.
func TestFnThatCommitsIsNeverRerun(t *testing.T) {
	db := mariaDB(openDB(t, nil))
	integrationtest.FnThatCommitsIsNeverRerun(t, db, "txnmysql", (*sql.Tx).Commit)
}

// TestCommitAndRollbackBoundedThroughSilentLink puts a proxy between the
// driver and the server that goes silent when it sees COMMIT (or
// ROLLBACK), for as long as the test wants. database/sql's Commit and
// Rollback take no context; Run must still return within the caller's
// deadline (COMMIT: the outcome is then unknown) or RollbackTimeout
// (ROLLBACK): it must return while the link is still silent. The test
// releases the stall only after Run has returned, or after a minute if it
// does not.
func TestCommitAndRollbackBoundedThroughSilentLink(t *testing.T) {
	admin := openDB(t, nil)
	errApp := errors.New("application error")
	for _, tc := range []struct {
		name    string
		pattern string
		fnErr   error
	}{
		{"COMMIT", "COMMIT", nil},
		{"ROLLBACK", "ROLLBACK", errApp},
	} {
		t.Run(tc.name, func(t *testing.T) {
			db, p := proxied(t)
			tbl := createTable(t, admin, "id INT PRIMARY KEY")
			ctx, cancel := context.WithTimeout(testCtx(t), 2*time.Second)
			defer cancel()
			r := txnmysql.New(db, txn.RollbackTimeout(time.Second))
			err := integrationtest.SilentLink(t, ctx, p, r, func(ctx context.Context, tx *sql.Tx) error {
				_, err := tx.ExecContext(ctx, "INSERT INTO "+tbl+" VALUES (1)")
				return err
			}, tc.pattern, tc.fnErr)
			if tc.fnErr == nil {
				assert.ErrorIs(t, err, txn.ErrCommitUnknown)
				var gu *txn.GiveUpError
				require.ErrorAs(t, err, &gu)
				assert.True(t, gu.Ambiguous)
			} else {
				assert.Same(t, tc.fnErr, err, "fn's error comes back once the rollback gave up")
			}
		})
	}
}

// TestIdempotentCommitCutUntilAttemptsRunOut: with txn.Idempotent and
// MaxAttempts(2), the proxy cuts the reply to every COMMIT. Each commit
// happened, the client never learned it: the error must say the outcome is
// unknown (and that attempts ran out), not only "attempt limit reached".
func TestIdempotentCommitCutUntilAttemptsRunOut(t *testing.T) {
	admin := openDB(t, nil)
	db, p := proxied(t)
	ctx := testCtx(t)
	tbl := createTable(t, admin, "id INT PRIMARY KEY, calls INT NOT NULL")
	r := txnmysql.New(db, txn.WithBackoff(txn.Constant(0)))
	calls := 0
	err := r.Run(ctx, func(ctx context.Context, tx *sql.Tx) error {
		calls++
		if _, err := tx.ExecContext(ctx,
			"INSERT INTO "+tbl+" VALUES (1, 1) ON DUPLICATE KEY UPDATE calls = calls + 1"); err != nil {
			return err
		}
		p.Arm([]byte("COMMIT"), faultproxy.CutAfterReply)
		return nil
	}, txn.Idempotent(), txn.MaxAttempts(2))
	require.Error(t, err)
	t.Logf("Run returned %v", err)
	assert.Equal(t, 2, calls)
	assert.Equal(t, 2, p.Fires())
	assert.ErrorIs(t, err, txn.ErrCommitUnknown)
	assert.ErrorIs(t, err, txn.ErrAttemptsExhausted)
	var gu *txn.GiveUpError
	require.ErrorAs(t, err, &gu)
	assert.True(t, gu.Ambiguous)
	assert.Equal(t, 1, count(t, admin, tbl, "id = 1 AND calls = 2"), "both commits happened")
}
