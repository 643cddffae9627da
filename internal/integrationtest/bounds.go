package integrationtest

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/txnkit/txn"
	"github.com/txnkit/txn/internal/faultproxy"
	"github.com/txnkit/txn/internal/testdb"
)

// ProxiedPostgresDSN starts a faultproxy in front of the PostgreSQL server
// named by testdb.PostgresEnv (a URL DSN) and returns the DSN that reaches
// the server through it, and the proxy, which is closed when t ends. An
// unreachable server shows up when the caller opens the DSN.
func ProxiedPostgresDSN(t testing.TB) (string, *faultproxy.Proxy) {
	t.Helper()
	u, err := url.Parse(testdb.DSN(testdb.PostgresEnv, testdb.PostgresDefault))
	require.NoError(t, err, "parse %s", testdb.PostgresEnv)
	require.NotEmpty(t, u.Host, "%s must be a URL with a host:port for the proxy", testdb.PostgresEnv)
	target := u.Host
	if u.Port() == "" {
		target += ":5432"
	}
	p, err := faultproxy.Start(target)
	require.NoError(t, err)
	t.Cleanup(func() { _ = p.Close() })
	u.Host = p.Addr()
	return u.String(), p
}

// ProxiedMySQLDSN starts a faultproxy in front of the MySQL/MariaDB server
// named by testdb.MySQLEnv (a go-sql-driver DSN over tcp(host:port)) and
// returns the DSN that reaches the server through it, and the proxy, which
// is closed when t ends. An unreachable server shows up when the caller
// opens the DSN.
func ProxiedMySQLDSN(t testing.TB) (string, *faultproxy.Proxy) {
	t.Helper()
	dsn := testdb.DSN(testdb.MySQLEnv, testdb.MySQLDefault)
	_, rest, ok := strings.Cut(dsn, "tcp(")
	addr, _, closed := strings.Cut(rest, ")")
	require.True(t, ok && closed, "%s must name a tcp(host:port) address for the proxy", testdb.MySQLEnv)
	start := len(dsn) - len(rest)
	end := start + len(addr)
	p, err := faultproxy.Start(dsn[start:end])
	require.NoError(t, err)
	t.Cleanup(func() { _ = p.Close() })
	return dsn[:start] + p.Addr() + dsn[end:], p
}

// SilentLink runs one transaction through r, whose connections reach the
// server through p: fn runs write, arms p to go silent when it sees
// pattern (COMMIT, ROLLBACK), and returns fnErr. database/sql's Commit and
// Rollback take no context; Run must still return within ctx (COMMIT) or
// the Runner's RollbackTimeout (ROLLBACK), while the link is still silent.
// SilentLink fails t if Run does not, or if fn ran more than once or the
// stall did not fire, and returns Run's error. The stall is released once
// Run has returned, or after a minute if it does not. opts are Run's call
// options.
func SilentLink[T any](t *testing.T, ctx context.Context, p *faultproxy.Proxy, r *txn.Runner[T], write func(context.Context, T) error, pattern string, fnErr error, opts ...txn.CallOption) error {
	t.Helper()
	calls := 0
	done := make(chan error, 1)
	go func() {
		done <- r.Run(ctx, func(ctx context.Context, tx T) error {
			calls++
			if err := write(ctx, tx); err != nil {
				return err
			}
			p.Arm([]byte(pattern), faultproxy.Stall)
			return fnErr
		}, opts...)
	}()
	var err error
	returned := false
	select {
	case err = <-done:
		returned = true
	case <-time.After(time.Minute):
	}
	stalled := p.Fires() == 1
	p.Release()
	if !returned {
		require.FailNow(t, "Run did not return while the link was silent", "after release it returned %v", <-done)
	}
	require.True(t, stalled, "the stall fired")
	t.Logf("Run returned %v", err)
	assert.Equal(t, 1, calls)
	return err
}

// CommitBoundedThroughSilentLink runs a transaction over db, which reaches
// its server through p, and arms p to go silent when it sees COMMIT (see
// SilentLink): Run returns within the caller's deadline, while the link is
// still silent, with an error matching txn.ErrCommitUnknown (a give-up
// marked ambiguous), without running fn again.
func CommitBoundedThroughSilentLink[T any](t *testing.T, db DB[T], p *faultproxy.Proxy, prefix string) {
	tbl := CreateTable(t, db, prefix, "id INT PRIMARY KEY")
	ctx, cancel := context.WithTimeout(Context(t), 2*time.Second)
	defer cancel()
	r := db.Runner(txn.RollbackTimeout(time.Second))
	err := SilentLink(t, ctx, p, r, func(ctx context.Context, tx T) error {
		return db.TxExec(ctx, tx, "INSERT INTO "+tbl+" VALUES (1)")
	}, "COMMIT", nil)
	assert.ErrorIs(t, err, txn.ErrCommitUnknown)
	var gu *txn.GiveUpError
	require.ErrorAs(t, err, &gu)
	assert.True(t, gu.Ambiguous)
}

// ContextEndsDuringFn cancels the caller's context in the middle of fn,
// after a write, and returns its error. database/sql rolls a transaction
// back by itself when the context it was begun with ends, after which Run's
// rollback would find it already ended and report txn.ErrFnFinishedTx, as
// if fn had ended it: the integration must begin it on a context the
// caller's cancellation does not reach. The transaction is still open when
// fn returns (its connection is still checked out after another round trip
// to the server); Run returns the context's error, rolls the write back and
// releases the connection.
func ContextEndsDuringFn[T any](t *testing.T, db DB[T], prefix string) {
	tbl := CreateTable(t, db, prefix, "id INT PRIMARY KEY")
	ctx, cancel := context.WithCancel(Context(t))
	defer cancel()
	r := db.Runner()
	calls := 0
	inUse := -1
	err := r.Run(ctx, func(ctx context.Context, tx T) error {
		calls++
		if err := db.TxExec(ctx, tx, "INSERT INTO "+tbl+" VALUES (1)"); err != nil {
			return err
		}
		cancel()
		// A round trip on another connection: time enough for
		// database/sql to end a transaction watching ctx.
		if err := db.Exec(context.Background(), "SELECT 1"); err != nil {
			return txn.Permanent(err)
		}
		inUse = db.ConnsInUse()
		return ctx.Err()
	})
	require.Error(t, err)
	assert.ErrorIs(t, err, context.Canceled)
	assert.False(t, errors.Is(err, txn.ErrFnFinishedTx), "fn did not end the transaction: %v", err)
	assert.Equal(t, 1, calls)
	assert.Equal(t, 1, inUse, "the transaction outlived the caller's cancellation until Run ended it")
	assert.Zero(t, oneInt(t, Context(t), db, "SELECT COUNT(*) FROM "+tbl), "the write was rolled back")
	assert.Equal(t, 0, db.ConnsInUse(), "the connection was released")
}

// CommitBoundedOnPostgresAndMariaDB runs CommitBoundedThroughSilentLink
// as the subtests postgres and mariadb, on the databases openPG and
// openMySQL open at a DSN that goes through a proxy.
func CommitBoundedOnPostgresAndMariaDB[T any](t *testing.T, prefix string, openPG, openMySQL func(t *testing.T, dsn string) DB[T]) {
	t.Run("postgres", func(t *testing.T) {
		dsn, p := ProxiedPostgresDSN(t)
		CommitBoundedThroughSilentLink(t, openPG(t, dsn), p, prefix)
	})
	t.Run("mariadb", func(t *testing.T) {
		dsn, p := ProxiedMySQLDSN(t)
		CommitBoundedThroughSilentLink(t, openMySQL(t, dsn), p, prefix)
	})
}

// BeginBoundedThroughSilentLink arms a proxy, which stands between a pool
// of one connection and its server, to go silent when it sees pattern (the
// BEGIN), or keyedPattern when the Runner holds keys in the database
// (txn.DatabaseKeys: the lock statement sent with it), and runs a Run
// through the pool: it returns within its deadline plus RollbackTimeout,
// fn never ran, and once the link speaks again the next Run on the pool
// commits, running stmt. It does both, without and with keys, each on the
// proxy and the Runner builder that open gives it (the builder's Runners
// share one pool).
func BeginBoundedThroughSilentLink[T any](t *testing.T, open func(t *testing.T) (*faultproxy.Proxy, func(opts ...txn.RunnerOption) *txn.Runner[T]), pattern, keyedPattern string, stmt func(context.Context, T) error) {
	for _, keyed := range []bool{false, true} {
		t.Run(fmt.Sprintf("keys=%v", keyed), func(t *testing.T) {
			p, newRunner := open(t)
			const deadline, rollbackTimeout = 500 * time.Millisecond, 500 * time.Millisecond
			ropts := []txn.RunnerOption{txn.RollbackTimeout(rollbackTimeout)}
			var copts []txn.CallOption
			armed := pattern
			if keyed {
				ropts, copts, armed = append(ropts, txn.DatabaseKeys()), append(copts, txn.Keys("silent")), keyedPattern
			}
			r := newRunner(ropts...)
			p.Arm([]byte(armed), faultproxy.Stall)
			ctx, cancel := context.WithTimeout(context.Background(), deadline)
			defer cancel()
			ran := 0
			start := time.Now()
			err := r.Run(ctx, func(context.Context, T) error { ran++; return nil }, copts...)
			el := time.Since(start)
			fired := p.Fires()
			p.Release()
			t.Logf("Run returned after %v: %v", el.Round(time.Millisecond), err)
			require.Error(t, err)
			assert.Equal(t, 1, fired, "the stall fired")
			assert.Zero(t, ran)
			assert.Less(t, el, deadline+rollbackTimeout+time.Second)
			ctx2, cancel2 := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel2()
			require.NoError(t, r.Run(ctx2, stmt, copts...))
		})
	}
}
