package txnmysql_test

import (
	"context"
	"database/sql"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/txnkit/txn"
	"github.com/txnkit/txn/backends/txnmysql"
	"github.com/txnkit/txn/internal/integrationtest"
)

// TestDatabaseKeysCommitAndRollbackBoundedThroughSilentLink is
// TestCommitAndRollbackBoundedThroughSilentLink with txn.DatabaseKeys: the
// attempt's named locks are released on its connection after the
// transaction ends. When COMMIT or ROLLBACK goes unanswered, that release
// must not wait for it: Run still returns within its deadline (COMMIT) or
// its RollbackTimeout (ROLLBACK), while the link is still silent.
func TestDatabaseKeysCommitAndRollbackBoundedThroughSilentLink(t *testing.T) {
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
			const deadline, rollbackTimeout = time.Second, 500 * time.Millisecond
			ctx, cancel := context.WithTimeout(testCtx(t), deadline)
			defer cancel()
			r := txnmysql.New(db, txn.RollbackTimeout(rollbackTimeout), txn.DatabaseKeys())
			start := time.Now()
			err := integrationtest.SilentLink(t, ctx, p, r, func(ctx context.Context, tx *sql.Tx) error {
				_, err := tx.ExecContext(ctx, "INSERT INTO "+tbl+" VALUES (1)")
				return err
			}, tc.pattern, tc.fnErr, txn.Keys("silent"))
			elapsed := time.Since(start)
			// The bound: the deadline, then the rollback and the release of
			// the keys, each within RollbackTimeout, plus slack.
			assert.Less(t, elapsed, deadline+2*rollbackTimeout+time.Second)
			if tc.fnErr == nil {
				assert.ErrorIs(t, err, txn.ErrCommitUnknown)
			} else {
				assert.Same(t, tc.fnErr, err)
			}
			// Once the link speaks again the key is free: the connection
			// that held it was released or discarded.
			other := txnmysql.New(admin, txn.DatabaseKeys())
			kctx, kcancel := context.WithTimeout(testCtx(t), 10*time.Second)
			defer kcancel()
			require.NoError(t, other.Run(kctx, func(context.Context, *sql.Tx) error { return nil }, txn.Keys("silent")))
		})
	}
}

// cancelAtCommit ends the caller's context at the COMMIT point, after fn
// returned and before COMMIT is sent.
type cancelAtCommit struct{ cancel context.CancelFunc }

func (c cancelAtCommit) Intercept(_ context.Context, at txn.InterceptPoint, _ int) error {
	if at == txn.InterceptCommit {
		c.cancel()
	}
	return nil
}

// TestCancelBeforeCommitRollbackBoundedByRollbackTimeout: when the context
// ends after fn returned and before COMMIT is sent, nothing is committed and
// the transaction is rolled back; over a link gone silent, that rollback is
// bounded by the Runner's RollbackTimeout (200 ms here), not by
// txn.DefaultRollbackTimeout (5 s), and Run's error is definite.
func TestCancelBeforeCommitRollbackBoundedByRollbackTimeout(t *testing.T) {
	db, p := proxied(t)
	admin := openDB(t, nil)
	tbl := createTable(t, admin, "id INT PRIMARY KEY")
	r := txnmysql.New(db, txn.RollbackTimeout(200*time.Millisecond), txn.NoAdaptive())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	start := time.Now()
	err := integrationtest.SilentLink(t, ctx, p, r.WithInterceptor(cancelAtCommit{cancel}), func(ctx context.Context, tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, "INSERT INTO "+tbl+" VALUES (1)")
		return err
	}, "ROLLBACK", nil)
	elapsed := time.Since(start)
	require.ErrorIs(t, err, context.Canceled)
	assert.NotErrorIs(t, err, txn.ErrCommitUnknown, "no COMMIT was sent: the outcome is known")
	assert.ErrorContains(t, err, "transaction not committed", "the rollback did not finish: the error does not say it did")
	assert.Less(t, elapsed, txn.DefaultRollbackTimeout, "the rollback is bounded by RollbackTimeout")
	var n int
	require.NoError(t, admin.QueryRowContext(context.Background(), "SELECT COUNT(*) FROM "+tbl).Scan(&n))
	assert.Zero(t, n, "nothing committed")
}
