package txnpgx_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/txnkit/txn"
	"github.com/txnkit/txn/internal/testdb"
)

// defaultDSN is used when TXN_PG_DSN is not set.
const defaultDSN = testdb.PostgresDefault

// waitLimit bounds every wait in these tests, so that a bug shows up as a
// failure rather than a hang. It is not a speed assertion.
const waitLimit = 30 * time.Second

func pgDSN() string { return testdb.DSN(testdb.PostgresEnv, defaultDSN) }

// unavailable skips the test, or fails it when TXN_REQUIRE_DBS=1.
func unavailable(tb testing.TB, err error) {
	tb.Helper()
	testdb.Unreachable(tb, "PostgreSQL (default "+defaultDSN+")", testdb.PostgresEnv, err)
}

// poolConfig returns the pool configuration for TXN_PG_DSN, with a low
// deadlock_timeout on every session so that deadlock tests resolve fast.
func poolConfig(tb testing.TB) *pgxpool.Config {
	tb.Helper()
	cfg, err := pgxpool.ParseConfig(pgDSN())
	require.NoError(tb, err, "TXN_PG_DSN")
	cfg.MaxConns = 8
	cfg.ConnConfig.ConnectTimeout = 5 * time.Second
	cfg.AfterConnect = func(ctx context.Context, c *pgx.Conn) error {
		_, err := c.Exec(ctx, "SET deadlock_timeout = '50ms'")
		return err
	}
	return cfg
}

// newPool connects a pool with cfg (nil: poolConfig), or skips the test.
func newPool(tb testing.TB, cfg *pgxpool.Config) *pgxpool.Pool {
	tb.Helper()
	if cfg == nil {
		cfg = poolConfig(tb)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err == nil {
		err = pool.Ping(ctx)
		if err != nil {
			pool.Close()
		}
	}
	if err != nil {
		unavailable(tb, err)
	}
	tb.Cleanup(pool.Close)
	return pool
}

// newTable creates a table with a name unique to this run and drops it when
// the test ends. The name never contains "commit", so that it cannot trip a
// fault armed on that word.
func newTable(tb testing.TB, pool *pgxpool.Pool, columns string) string {
	tb.Helper()
	name := fmt.Sprintf("txnpgx_t%016x", rand.Uint64())
	ctx := context.Background()
	_, err := pool.Exec(ctx, "CREATE TABLE "+name+" ("+columns+")")
	require.NoError(tb, err, "create table")
	tb.Cleanup(func() {
		_, err := pool.Exec(context.Background(), "DROP TABLE IF EXISTS "+name)
		assert.NoError(tb, err, "drop table %s", name)
	})
	return name
}

// counterTable creates a table (id int PRIMARY KEY, v int NOT NULL) with
// newTable and inserts the row (1, 0).
func counterTable(tb testing.TB, pool *pgxpool.Pool) string {
	tb.Helper()
	tbl := newTable(tb, pool, "id int PRIMARY KEY, v int NOT NULL")
	mustExec(tb, pool, "INSERT INTO "+tbl+" VALUES (1, 0)")
	return tbl
}

func mustExec(tb testing.TB, pool *pgxpool.Pool, sql string, args ...any) {
	tb.Helper()
	_, err := pool.Exec(context.Background(), sql, args...)
	require.NoError(tb, err, sql)
}

func queryInt(tb testing.TB, pool *pgxpool.Pool, sql string, args ...any) int {
	tb.Helper()
	var n int
	require.NoError(tb, pool.QueryRow(context.Background(), sql, args...).Scan(&n), sql)
	return n
}

func testCtx(tb testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*waitLimit)
	tb.Cleanup(cancel)
	return ctx
}

// recorder is an Observer that keeps the retries and give-ups of Runs.
type recorder struct {
	txn.NopObserver
	mu      sync.Mutex
	retries []txn.RetryEvent
	gaveUp  []txn.GiveUpEvent
	commits atomic.Int64
}

func (r *recorder) RetryScheduled(_ context.Context, e txn.RetryEvent) {
	r.mu.Lock()
	r.retries = append(r.retries, e)
	r.mu.Unlock()
}

func (r *recorder) GaveUp(_ context.Context, e txn.GiveUpEvent) {
	r.mu.Lock()
	r.gaveUp = append(r.gaveUp, e)
	r.mu.Unlock()
}

func (r *recorder) Committed(context.Context, txn.CommitEvent) { r.commits.Add(1) }

// retryCodes returns the SQLSTATE of every retry's error ("" if none).
func (r *recorder) retryCodes() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	codes := make([]string, len(r.retries))
	for i, e := range r.retries {
		codes[i] = sqlState(e.Err)
	}
	return codes
}

func (r *recorder) retryCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.retries)
}

// sqlState returns err's SQLSTATE, or "".
func sqlState(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code
	}
	return ""
}

// requireRanOnceWithCode requires that fn ran exactly once and that err is
// a *pgconn.PgError with SQLSTATE code.
func requireRanOnceWithCode(t *testing.T, attempts int, err error, code string) {
	t.Helper()
	require.Equal(t, 1, attempts, "fn runs once")
	var pgErr *pgconn.PgError
	require.ErrorAs(t, err, &pgErr)
	require.Equal(t, code, pgErr.Code, "SQLSTATE")
}

// concurrentUpdate makes the calling transaction (which must already hold a
// REPEATABLE READ or SERIALIZABLE snapshot) lose a race on row id of table:
// another connection updates the row and commits, so the caller's next
// update of it fails with 40001 "could not serialize access due to
// concurrent update".
func concurrentUpdate(tb testing.TB, pool *pgxpool.Pool, table string, id int) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	_, err := pool.Exec(ctx, "UPDATE "+table+" SET v = v + 100 WHERE id = $1", id)
	assert.NoError(tb, err, "concurrent update")
}
