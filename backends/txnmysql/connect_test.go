package txnmysql_test

import (
	"context"
	"database/sql"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/txnkit/txn"
	"github.com/txnkit/txn/backends/txnmysql"
	"github.com/txnkit/txn/internal/faultproxy/faulttest"
)

// openAt opens, without connecting, a pool on the test server's DSN with
// its address replaced by addr.
func openAt(t *testing.T, addr string) *sql.DB {
	t.Helper()
	cfg := serverConfig(t)
	if cfg.Net != "tcp" {
		t.Skipf("%s uses %q, the test needs tcp", dsnEnv, cfg.Net)
	}
	openConfig(t, cfg.Clone()) // skip or fail now if the server is down
	cfg.Addr = addr
	cfg.Timeout = 10 * time.Second
	conn, err := mysql.NewConnector(cfg)
	require.NoError(t, err)
	db := sql.OpenDB(conn)
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// insertRun returns an fn that inserts one row into table.
func insertRun(table string) func(context.Context, *sql.Tx) error {
	return func(ctx context.Context, tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, "INSERT INTO "+table+" (v) VALUES (1)")
		return err
	}
}

// TestConnectFailuresAreConnectionLost connects for real to a port where
// nothing listens and through a proxy that resets the connection before
// or after the server's greeting, and classifies the error database/sql
// returns from BeginTx: a connection error, never permanent.
func TestConnectFailuresAreConnectionLost(t *testing.T) {
	ctx := testCtx(t)
	t.Run("refused", func(t *testing.T) {
		db := openAt(t, faulttest.ClosedAddr(t))
		_, err := db.BeginTx(ctx, nil)
		require.Error(t, err)
		var opErr *net.OpError
		require.ErrorAs(t, err, &opErr, "%T %v", err, err)
		assert.Equal(t, "dial", opErr.Op)
		assert.Equal(t, txn.ClassConnLost, txnmysql.Classify(err), "%T %v", err, err)
	})
	for name, fault := range faulttest.ConnectFaults() {
		t.Run(name, func(t *testing.T) {
			p := faulttest.FaultyProxy(t, serverConfig(t).Addr, fault)
			db := openAt(t, p.Addr())
			for i := range 5 {
				_, err := db.BeginTx(ctx, nil)
				require.Error(t, err)
				t.Logf("connect %d: %T %v", i, err, err)
				assert.Equal(t, txn.ClassConnLost, txnmysql.Classify(err), "%T %v", err, err)
			}
			assert.GreaterOrEqual(t, p.ConnectResets(), 5)
		})
	}
}

// TestRunRetriesRefusedConnect runs a transaction on an address that
// refuses connections until the second retry is scheduled, when the test
// opens a proxy to the server there: Run retries the refused connects and
// commits on its third attempt.
func TestRunRetriesRefusedConnect(t *testing.T) {
	ctx := testCtx(t)
	admin := openDB(t, nil)
	table := createTable(t, admin, "id INT AUTO_INCREMENT PRIMARY KEY, v INT")
	addr := faulttest.ClosedAddr(t)
	db := openAt(t, addr)
	obs := faulttest.ListenOnRetry(t, 2, addr, serverConfig(t).Addr)
	r := txnmysql.New(db, txn.MaxAttempts(5), txn.WithBackoff(txn.Constant(time.Millisecond)), txn.WithObserver(obs))
	require.NoError(t, r.Run(ctx, insertRun(table)))

	retries := obs.Retries()
	require.Len(t, retries, 2)
	for _, e := range retries {
		var opErr *net.OpError
		assert.ErrorAs(t, e.Err, &opErr)
		assert.Equal(t, txn.ClassRetryable, e.Class)
	}
	assert.Equal(t, 1, count(t, admin, table, "v = 1"))
}

// TestRunRetriesResetConnect runs a transaction through a proxy that
// resets every new connection, before or after the server's greeting,
// until the second retry is scheduled: Run retries and commits on its
// third attempt.
func TestRunRetriesResetConnect(t *testing.T) {
	for name, fault := range faulttest.ConnectFaults() {
		t.Run(name, func(t *testing.T) {
			ctx := testCtx(t)
			admin := openDB(t, nil)
			table := createTable(t, admin, "id INT AUTO_INCREMENT PRIMARY KEY, v INT")
			p := faulttest.FaultyProxy(t, serverConfig(t).Addr, fault)
			db := openAt(t, p.Addr())
			obs := faulttest.PassOnRetry(p, 2)
			r := txnmysql.New(db, txn.MaxAttempts(5), txn.WithBackoff(txn.Constant(time.Millisecond)), txn.WithObserver(obs))
			require.NoError(t, r.Run(ctx, insertRun(table)))

			retries := obs.Retries()
			require.Len(t, retries, 2)
			for _, e := range retries {
				assert.Equal(t, txn.ClassRetryable, e.Class, "%T %v", e.Err, e.Err)
			}
			assert.GreaterOrEqual(t, p.ConnectResets(), 2)
			assert.Equal(t, 1, count(t, admin, table, "v = 1"))
		})
	}
}

// TestRunRefusedGivesUpAfterRetrying runs on a port where nothing ever
// listens: Run retries up to the attempt limit and returns the last
// connect error, wrapped.
func TestRunRefusedGivesUpAfterRetrying(t *testing.T) {
	ctx := testCtx(t)
	db := openAt(t, faulttest.ClosedAddr(t))
	obs := &faulttest.OnRetry{}
	r := txnmysql.New(db, txn.MaxAttempts(3), txn.WithBackoff(txn.Constant(time.Millisecond)), txn.WithObserver(obs))
	calls := 0
	err := r.Run(ctx, func(context.Context, *sql.Tx) error { calls++; return nil })
	require.Error(t, err)
	assert.ErrorIs(t, err, txn.ErrAttemptsExhausted)
	var opErr *net.OpError
	assert.ErrorAs(t, err, &opErr)
	assert.Len(t, obs.Retries(), 2)
	assert.Zero(t, calls, "fn never ran: no connection was ever made")
	assert.False(t, errors.Is(err, txn.ErrCommitUnknown))
}
