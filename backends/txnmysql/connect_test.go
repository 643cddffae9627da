package txnmysql_test

import (
	"context"
	"database/sql"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/txnkit/txn"
	"github.com/txnkit/txn/backends/txnmysql"
	"github.com/txnkit/txn/internal/faultproxy"
)

// closedAddr returns a loopback address where nothing listens: connecting
// to it is refused.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

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

// onRetry is a txn.Observer that calls f, in Run's goroutine, with every
// retry before its backoff sleep starts.
type onRetry struct {
	txn.NopObserver
	mu     sync.Mutex
	f      func(txn.RetryEvent)
	events []txn.RetryEvent
}

func (o *onRetry) RetryScheduled(_ context.Context, e txn.RetryEvent) {
	o.mu.Lock()
	o.events = append(o.events, e)
	o.mu.Unlock()
	if o.f != nil {
		o.f(e)
	}
}

func (o *onRetry) retries() []txn.RetryEvent {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]txn.RetryEvent(nil), o.events...)
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
		db := openAt(t, closedAddr(t))
		_, err := db.BeginTx(ctx, nil)
		require.Error(t, err)
		var opErr *net.OpError
		require.ErrorAs(t, err, &opErr, "%T %v", err, err)
		assert.Equal(t, "dial", opErr.Op)
		assert.Equal(t, txn.ClassConnLost, txnmysql.Classify(err), "%T %v", err, err)
	})
	for _, fault := range []faultproxy.ConnectFault{faultproxy.ResetOnAccept, faultproxy.ResetAfterGreeting} {
		t.Run(map[faultproxy.ConnectFault]string{faultproxy.ResetOnAccept: "reset on accept", faultproxy.ResetAfterGreeting: "reset after greeting"}[fault], func(t *testing.T) {
			cfg := serverConfig(t)
			p, err := faultproxy.Start(cfg.Addr)
			require.NoError(t, err)
			t.Cleanup(func() { _ = p.Close() })
			p.SetConnectFault(fault)
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
	addr := closedAddr(t)
	db := openAt(t, addr)
	target := serverConfig(t).Addr

	var proxy *faultproxy.Proxy
	obs := &onRetry{f: func(e txn.RetryEvent) {
		if e.Attempt == 2 {
			p, err := faultproxy.StartAt(addr, target)
			if assert.NoError(t, err) {
				proxy = p
			}
		}
	}}
	t.Cleanup(func() {
		if proxy != nil {
			_ = proxy.Close()
		}
	})
	r := txnmysql.New(db, txn.MaxAttempts(5), txn.WithBackoff(txn.Constant(time.Millisecond)), txn.WithObserver(obs))
	require.NoError(t, r.Run(ctx, insertRun(table)))

	retries := obs.retries()
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
	for _, fault := range []faultproxy.ConnectFault{faultproxy.ResetOnAccept, faultproxy.ResetAfterGreeting} {
		t.Run(map[faultproxy.ConnectFault]string{faultproxy.ResetOnAccept: "reset on accept", faultproxy.ResetAfterGreeting: "reset after greeting"}[fault], func(t *testing.T) {
			ctx := testCtx(t)
			admin := openDB(t, nil)
			table := createTable(t, admin, "id INT AUTO_INCREMENT PRIMARY KEY, v INT")
			p, err := faultproxy.Start(serverConfig(t).Addr)
			require.NoError(t, err)
			t.Cleanup(func() { _ = p.Close() })
			p.SetConnectFault(fault)
			db := openAt(t, p.Addr())

			obs := &onRetry{f: func(e txn.RetryEvent) {
				if e.Attempt == 2 {
					p.SetConnectFault(faultproxy.ConnectPass)
				}
			}}
			r := txnmysql.New(db, txn.MaxAttempts(5), txn.WithBackoff(txn.Constant(time.Millisecond)), txn.WithObserver(obs))
			require.NoError(t, r.Run(ctx, insertRun(table)))

			retries := obs.retries()
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
	db := openAt(t, closedAddr(t))
	obs := &onRetry{}
	r := txnmysql.New(db, txn.MaxAttempts(3), txn.WithBackoff(txn.Constant(time.Millisecond)), txn.WithObserver(obs))
	calls := 0
	err := r.Run(ctx, func(context.Context, *sql.Tx) error { calls++; return nil })
	require.Error(t, err)
	assert.ErrorIs(t, err, txn.ErrAttemptsExhausted)
	var opErr *net.OpError
	assert.ErrorAs(t, err, &opErr)
	assert.Len(t, obs.retries(), 2)
	assert.Zero(t, calls, "fn never ran: no connection was ever made")
	assert.False(t, errors.Is(err, txn.ErrCommitUnknown))
}
