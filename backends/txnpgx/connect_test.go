package txnpgx_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/txnkit/txn"
	"github.com/txnkit/txn/backends/txnpgx"
	"github.com/txnkit/txn/internal/faultproxy/faulttest"
)

// lazyPoolAt returns a pool on the test server's configuration with its
// address replaced by addr. It does not connect: pgxpool connects on the
// first Begin.
func lazyPoolAt(t *testing.T, addr string) *pgxpool.Pool {
	t.Helper()
	newPool(t, nil) // skip or fail now if the server is down
	cfg := poolConfig(t)
	host, port, err := net.SplitHostPort(addr)
	require.NoError(t, err)
	p, err := strconv.ParseUint(port, 10, 16)
	require.NoError(t, err)
	cfg.ConnConfig.Host = host
	cfg.ConnConfig.Port = uint16(p)
	cfg.ConnConfig.Fallbacks = nil
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	return pool
}

// serverAddr returns host:port of the test server.
func serverAddr(t *testing.T) string {
	t.Helper()
	cfg := poolConfig(t)
	return net.JoinHostPort(cfg.ConnConfig.Host, strconv.Itoa(int(cfg.ConnConfig.Port)))
}

// TestConnectFailuresAreConnectionLost connects for real to a port where
// nothing listens and through a proxy that resets the connection before or
// after the server's first answer: the error of Begin is a connection
// error (retried before COMMIT), or, when pgx reports that nothing was
// sent (a BEGIN written to a connection already reset), retryable.
func TestConnectFailuresAreConnectionLost(t *testing.T) {
	ctx := testCtx(t)
	t.Run("refused", func(t *testing.T) {
		pool := lazyPoolAt(t, faulttest.ClosedAddr(t))
		_, err := pool.Begin(ctx)
		require.Error(t, err)
		var ce *pgconn.ConnectError
		assert.ErrorAs(t, err, &ce)
		assert.Equal(t, txn.ClassConnLost, txnpgx.Classify(err), "%T %v", err, err)
	})
	for name, fault := range faulttest.ConnectFaults() {
		t.Run(name, func(t *testing.T) {
			p := faulttest.FaultyProxy(t, serverAddr(t), fault)
			pool := lazyPoolAt(t, p.Addr())
			for i := range 3 {
				_, err := pool.Begin(ctx)
				require.Error(t, err)
				t.Logf("connect %d: %T %v", i, err, err)
				assert.Contains(t, []txn.Class{txn.ClassConnLost, txn.ClassRetryable}, txnpgx.Classify(err), "%T %v", err, err)
			}
		})
	}
}

// TestRunRetriesRefusedConnect runs on an address that refuses
// connections until the second retry is scheduled, when the test opens a
// proxy to the server there: Run commits on its third attempt.
func TestRunRetriesRefusedConnect(t *testing.T) {
	ctx := testCtx(t)
	admin := newPool(t, nil)
	table := newTable(t, admin, "v int")
	addr := faulttest.ClosedAddr(t)
	pool := lazyPoolAt(t, addr)
	obs := faulttest.ListenOnRetry(t, 2, addr, serverAddr(t))
	r := txnpgx.New(pool, txn.MaxAttempts(5), txn.WithBackoff(txn.Constant(time.Millisecond)), txn.WithObserver(obs))
	require.NoError(t, r.Run(ctx, func(ctx context.Context, tx pgx.Tx) error {
		_, err := tx.Exec(ctx, "INSERT INTO "+table+" VALUES (1)")
		return err
	}))
	require.Len(t, obs.Retries(), 2)
	for _, e := range obs.Retries() {
		assert.Equal(t, txn.ClassRetryable, e.Class, "%T %v", e.Err, e.Err)
	}
	assert.Equal(t, 1, queryInt(t, admin, "SELECT count(*) FROM "+table))
}

// TestRunRetriesResetConnect runs through a proxy that resets every new
// connection until the second retry is scheduled: Run commits on its
// third attempt.
func TestRunRetriesResetConnect(t *testing.T) {
	for name, fault := range faulttest.ConnectFaults() {
		t.Run(name, func(t *testing.T) {
			ctx := testCtx(t)
			admin := newPool(t, nil)
			table := newTable(t, admin, "v int")
			p := faulttest.FaultyProxy(t, serverAddr(t), fault)
			pool := lazyPoolAt(t, p.Addr())
			obs := faulttest.PassOnRetry(p, 2)
			r := txnpgx.New(pool, txn.MaxAttempts(5), txn.WithBackoff(txn.Constant(time.Millisecond)), txn.WithObserver(obs))
			require.NoError(t, r.Run(ctx, func(ctx context.Context, tx pgx.Tx) error {
				_, err := tx.Exec(ctx, "INSERT INTO "+table+" VALUES (1)")
				return err
			}))
			require.Len(t, obs.Retries(), 2)
			assert.GreaterOrEqual(t, p.ConnectResets(), 2)
			assert.Equal(t, 1, queryInt(t, admin, "SELECT count(*) FROM "+table))
		})
	}
}

// TestRunRetriesTooManyConnections connects as a role whose connection
// limit is 0, so that the server refuses the session with 53300
// too_many_connections, until the second retry is scheduled, when the
// test lifts the limit: Run commits on its third attempt.
func TestRunRetriesTooManyConnections(t *testing.T) {
	ctx := testCtx(t)
	admin := newPool(t, nil)
	var b [4]byte
	_, _ = rand.Read(b[:])
	role := "txnpgx_limited_" + hex.EncodeToString(b[:])
	mustExec(t, admin, "CREATE ROLE "+role+" LOGIN CONNECTION LIMIT 0")
	t.Cleanup(func() { mustExec(t, admin, "DROP ROLE IF EXISTS "+role) })

	cfg := poolConfig(t)
	cfg.ConnConfig.User = role
	cfg.ConnConfig.Password = ""
	cfg.AfterConnect = nil
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)

	_, err = pool.Begin(ctx)
	require.Error(t, err)
	require.Equal(t, "53300", sqlState(err), "%v", err)
	assert.Equal(t, txn.ClassConnLost, txnpgx.Classify(err))

	obs := &faulttest.OnRetry{F: func(_ txn.RetryEvent, retry int) {
		if retry == 2 {
			mustExec(t, admin, "ALTER ROLE "+role+" CONNECTION LIMIT -1")
		}
	}}
	r := txnpgx.New(pool, txn.MaxAttempts(5), txn.WithBackoff(txn.Constant(time.Millisecond)), txn.WithObserver(obs))
	var one int
	require.NoError(t, r.Run(ctx, func(ctx context.Context, tx pgx.Tx) error {
		return tx.QueryRow(ctx, "SELECT 1").Scan(&one)
	}))
	assert.Equal(t, 1, one)
	require.Len(t, obs.Retries(), 2)
	for _, e := range obs.Retries() {
		assert.Equal(t, "53300", sqlState(e.Err), fmt.Sprint(e.Err))
	}
}
