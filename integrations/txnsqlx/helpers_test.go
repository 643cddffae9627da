package txnsqlx_test

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5/pgconn"
	_ "github.com/jackc/pgx/v5/stdlib" // driver "pgx"
	"github.com/jmoiron/sqlx"
	"github.com/stretchr/testify/require"
	"github.com/txnkit/txn"
	"github.com/txnkit/txn/backends/txnmysql"
	"github.com/txnkit/txn/backends/txnpgx"
	"github.com/txnkit/txn/backends/txnsqlite"
	"github.com/txnkit/txn/integrations/txnsqlx"
	"github.com/txnkit/txn/internal/testdb"
	"modernc.org/sqlite"
)

// testTimeout bounds every test that talks to a server, so that a lock
// nobody releases fails the test instead of hanging it.
const testTimeout = 60 * time.Second

// dialect is one database the tests run against, through its
// database/sql driver.
type dialect struct {
	name string
	// open opens a handle, or skips (fails with TXN_REQUIRE_DBS=1) when the
	// server cannot be reached.
	open func(t testing.TB) *sqlx.DB
	// classify is the classifier the Runner gets (nil: txnsqlx.Classify).
	classify txn.Classifier
	// txOpts are the transaction options of the conflicting Runs.
	txOpts sql.TxOptions
	// shareLock is appended to the read of a read-then-write, so that two
	// such transactions deadlock (MySQL and MariaDB, whose REPEATABLE READ
	// does not detect lost updates).
	shareLock string
	// forUpdate is appended to the locking reads of the bank transfer.
	forUpdate string
	// singleWriter is true for SQLite: a transaction that has written
	// holds the only write lock until it ends.
	singleWriter bool
	// conflict reports whether err carries the driver's own report of a
	// lost race.
	conflict func(err error) bool
}

// pgConflict reports a PostgreSQL serialization failure or deadlock.
func pgConflict(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (pe.Code == "40001" || pe.Code == "40P01")
}

// mysqlConflict reports a MySQL/MariaDB deadlock.
func mysqlConflict(err error) bool {
	var me *mysql.MySQLError
	return errors.As(err, &me) && me.Number == 1213
}

// sqliteConflict reports SQLITE_BUSY or one of its extended codes.
func sqliteConflict(err error) bool {
	var se *sqlite.Error
	return errors.As(err, &se) && se.Code()&0xff == txnsqlite.CodeBusy
}

var (
	pgDialect = dialect{
		name: "postgres", open: openPostgres, classify: txnpgx.Classify,
		txOpts: sql.TxOptions{Isolation: sql.LevelRepeatableRead}, forUpdate: " FOR UPDATE",
		conflict: pgConflict,
	}
	// pgFallback is PostgreSQL classified by txnsqlx.Classify alone.
	pgFallback   = func() dialect { d := pgDialect; d.name, d.classify = "postgres-fallback", nil; return d }()
	mysqlDialect = dialect{
		name: "mariadb", open: openMySQL, classify: txnmysql.Classify,
		shareLock: " LOCK IN SHARE MODE", forUpdate: " FOR UPDATE",
		conflict: mysqlConflict,
	}
	sqliteDialect = dialect{
		name: "sqlite", open: openSQLite, classify: txnsqlite.Classify, singleWriter: true,
		conflict: sqliteConflict,
	}
	dialects = []dialect{pgDialect, mysqlDialect, sqliteDialect}
)

// forEach runs f as a subtest per dialect.
func forEach(t *testing.T, ds []dialect, f func(t *testing.T, d dialect)) {
	for _, d := range ds {
		t.Run(d.name, func(t *testing.T) { f(t, d) })
	}
}

// connect opens driverName's dsn and checks that it reaches its server, or
// skips t naming env.
func connect(t testing.TB, driverName, dsn, what, env string) *sqlx.DB {
	t.Helper()
	db, err := sqlx.Open(driverName, dsn)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := db.PingContext(ctx); err != nil {
		_ = db.Close()
		testdb.Unreachable(t, what, env, err)
	}
	db.SetMaxOpenConns(24)
	t.Cleanup(func() { _ = db.Close() })
	return db
}

func openPostgres(t testing.TB) *sqlx.DB {
	t.Helper()
	dsn := testdb.DSN(testdb.PostgresEnv, testdb.PostgresDefault)
	sep := "?"
	if strings.Contains(dsn, "?") {
		sep = "&"
	}
	// Deadlocks of the bank workload are detected after 100 ms instead of
	// the default second.
	return connect(t, "pgx", dsn+sep+"deadlock_timeout=100ms", "PostgreSQL", testdb.PostgresEnv)
}

func openMySQL(t testing.TB) *sqlx.DB {
	t.Helper()
	mc, err := mysql.ParseDSN(testdb.DSN(testdb.MySQLEnv, testdb.MySQLDefault))
	require.NoError(t, err)
	mc.Logger = &mysql.NopLogger{}
	return connect(t, "mysql", mc.FormatDSN(), "MySQL/MariaDB", testdb.MySQLEnv)
}

func openSQLite(t testing.TB) *sqlx.DB {
	t.Helper()
	// DEFERRED transactions (no _txlock=immediate), so that two of them
	// can race.
	path := filepath.Join(t.TempDir(), "txnsqlx.db")
	return connect(t, "sqlite", path+"?_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)", "SQLite", "")
}

// runner builds the Runner of d over db.
func (d dialect) runner(db *sqlx.DB, opts ...txn.Option) *txnsqlx.Runner {
	return txnsqlx.NewWithClassifier(db, d.classify, opts...)
}

// testCtx returns a context bounded by testTimeout and canceled when t
// ends, before its cleanups run.
func testCtx(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// createTable creates a table named after the test from columns and drops
// it when t ends. It returns the name.
func createTable(t testing.TB, db *sqlx.DB, columns string) string {
	t.Helper()
	var b [4]byte
	_, _ = rand.Read(b[:])
	base := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			return r
		case r >= 'A' && r <= 'Z':
			return r - 'A' + 'a'
		}
		return '_'
	}, strings.TrimPrefix(t.Name(), "Test"))
	if len(base) > 30 {
		base = base[len(base)-30:]
	}
	name := "txnsqlx_" + base + "_" + hex.EncodeToString(b[:])
	_, err := db.Exec("CREATE TABLE " + name + " (" + columns + ")")
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := db.ExecContext(ctx, "DROP TABLE IF EXISTS "+name); err != nil {
			t.Logf("drop %s: %v", name, err)
		}
	})
	return name
}

// names returns the name column of table, sorted.
func names(t testing.TB, db *sqlx.DB, table string) []string {
	t.Helper()
	var out []string
	require.NoError(t, db.Select(&out, "SELECT name FROM "+table+" ORDER BY name"))
	return out
}

// insertName inserts name into table on tx.
func insertName(ctx context.Context, tx *sqlx.Tx, table, name string) error {
	_, err := tx.ExecContext(ctx, tx.Rebind("INSERT INTO "+table+" (name) VALUES (?)"), name)
	return err
}

// counterValue returns the n column of row 1 of table.
func counterValue(t testing.TB, db *sqlx.DB, table string) int {
	t.Helper()
	var n int
	require.NoError(t, db.Get(&n, "SELECT n FROM "+table+" WHERE id = 1"))
	return n
}

// increment reads row 1's counter of table (with d's share lock), calls
// wait, then writes the value read plus one: two of them running at once
// lose a race that the database reports.
func increment(ctx context.Context, tx *sqlx.Tx, d dialect, table string, wait func() error) error {
	var n int
	if err := tx.GetContext(ctx, &n, "SELECT n FROM "+table+" WHERE id = 1"+d.shareLock); err != nil {
		return err
	}
	if wait != nil {
		if err := wait(); err != nil {
			return txn.Permanent(err)
		}
	}
	_, err := tx.ExecContext(ctx, tx.Rebind("UPDATE "+table+" SET n = ? WHERE id = 1"), n+1)
	return err
}

// barrier lets n goroutines wait for each other once.
type barrier struct {
	mu   sync.Mutex
	left int
	done chan struct{}
}

func newBarrier(n int) *barrier { return &barrier{left: n, done: make(chan struct{})} }

// wait blocks until n goroutines called wait, or ctx ends.
func (b *barrier) wait(ctx context.Context) error {
	b.mu.Lock()
	b.left--
	if b.left == 0 {
		close(b.done)
	}
	b.mu.Unlock()
	select {
	case <-b.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("barrier: %w", ctx.Err())
	}
}

// recorder is a txn.Observer that records retries and commits.
type recorder struct {
	txn.NopObserver
	mu      sync.Mutex
	retries []txn.RetryEvent
	commits int
}

func (r *recorder) RetryScheduled(_ context.Context, e txn.RetryEvent) {
	r.mu.Lock()
	r.retries = append(r.retries, e)
	r.mu.Unlock()
}

func (r *recorder) Committed(context.Context, txn.CommitEvent) {
	r.mu.Lock()
	r.commits++
	r.mu.Unlock()
}

// snapshot returns the retries and commits seen so far.
func (r *recorder) snapshot() ([]txn.RetryEvent, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]txn.RetryEvent(nil), r.retries...), r.commits
}
