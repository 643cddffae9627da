package txnmysql_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/stretchr/testify/require"
	"github.com/txnkit/txn"
	"github.com/txnkit/txn/internal/integrationtest"
	"github.com/txnkit/txn/internal/testdb"
)

// dsnEnv names the environment variable with the test server's DSN.
const dsnEnv = testdb.MySQLEnv

// defaultDSN is the MariaDB of the development machines.
const defaultDSN = testdb.MySQLDefault

// testTimeout bounds every test that talks to the server, so that a lock
// nobody releases fails the test instead of hanging it.
const testTimeout = 60 * time.Second

// serverConfig returns the parsed DSN of the test server.
func serverConfig(t testing.TB) *mysql.Config {
	t.Helper()
	cfg, err := mysql.ParseDSN(testdb.DSN(dsnEnv, defaultDSN))
	require.NoError(t, err, "parse %s", dsnEnv)
	// The driver logs "unexpected EOF" when a test cuts a connection on
	// purpose; the tests look at the errors themselves.
	cfg.Logger = &mysql.NopLogger{}
	return cfg
}

// openConfig opens a pool on cfg, or skips (fails with TXN_REQUIRE_DBS=1)
// when the server cannot be reached. The pool is closed when t ends.
func openConfig(t testing.TB, cfg *mysql.Config) *sql.DB {
	t.Helper()
	conn, err := mysql.NewConnector(cfg)
	require.NoError(t, err)
	db := sql.OpenDB(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := db.PingContext(ctx); err != nil {
		_ = db.Close()
		testdb.Unreachable(t, fmt.Sprintf("MySQL/MariaDB at %s (default DSN %q)", cfg.Addr, defaultDSN), dsnEnv, err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// openDB opens a pool on the test server with the given session variables
// set on every connection (the driver sends SET name=value on connect).
func openDB(t testing.TB, sessionVars map[string]string) *sql.DB {
	t.Helper()
	cfg := serverConfig(t)
	if len(sessionVars) > 0 {
		if cfg.Params == nil {
			cfg.Params = map[string]string{}
		}
		for k, v := range sessionVars {
			cfg.Params[k] = v
		}
	}
	return openConfig(t, cfg)
}

// testCtx returns a context bounded by testTimeout and canceled when t
// ends, before its cleanups run: goroutines that wait on it give up their
// transactions before the tables they locked are dropped.
func testCtx(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// createTable creates a table with a name unique to this test run from
// columns (the part between the parentheses of CREATE TABLE) and drops it
// when t ends. It returns the table's name.
func createTable(t testing.TB, db *sql.DB, columns string) string {
	t.Helper()
	name := integrationtest.TableName(t, "txnmysql", 40)
	ctx := context.Background()
	_, err := db.ExecContext(ctx, "CREATE TABLE "+name+" ("+columns+") ENGINE=InnoDB")
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

// errNumber returns the server error number in err's chain, or 0.
func errNumber(err error) uint16 {
	var me *mysql.MySQLError
	if errors.As(err, &me) {
		return me.Number
	}
	return 0
}

// retryRecorder is a txn.Observer that records every retry and commit.
type retryRecorder struct {
	txn.NopObserver
	mu         sync.Mutex
	retries    []txn.RetryEvent
	commits    int
	attempts   int
	lastGaveUp *txn.GiveUpEvent
}

func (r *retryRecorder) AttemptStarted(context.Context, txn.AttemptEvent) {
	r.mu.Lock()
	r.attempts++
	r.mu.Unlock()
}

func (r *retryRecorder) RetryScheduled(_ context.Context, e txn.RetryEvent) {
	r.mu.Lock()
	r.retries = append(r.retries, e)
	r.mu.Unlock()
}

func (r *retryRecorder) Committed(context.Context, txn.CommitEvent) {
	r.mu.Lock()
	r.commits++
	r.mu.Unlock()
}

func (r *retryRecorder) GaveUp(_ context.Context, e txn.GiveUpEvent) {
	r.mu.Lock()
	r.lastGaveUp = &e
	r.mu.Unlock()
}

// retriesWith returns how many retries were caused by server error number n.
func (r *retryRecorder) retriesWith(n uint16) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := 0
	for _, e := range r.retries {
		if errNumber(e.Err) == n {
			c++
		}
	}
	return c
}

// events returns a copy of the recorded retries.
func (r *retryRecorder) events() []txn.RetryEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]txn.RetryEvent(nil), r.retries...)
}

// connectionID returns the server's id of the connection tx runs on.
func connectionID(ctx context.Context, tx *sql.Tx) (int64, error) {
	var id int64
	err := tx.QueryRowContext(ctx, "SELECT CONNECTION_ID()").Scan(&id)
	return id, err
}

// waitFor polls cond every interval until it returns true, returns an
// error, or ctx ends.
func waitFor(ctx context.Context, interval time.Duration, cond func() (bool, error)) error {
	for {
		ok, err := cond()
		if err != nil || ok {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(interval):
		}
	}
}

// trxPoll is how often tests read information_schema.innodb_trx. InnoDB
// serves that table from a cache it refreshes only when the cache has not
// been read for 100ms, so polling faster would show a stale table forever.
const trxPoll = 150 * time.Millisecond

// lockWaiting reports whether the connection id is waiting for a row lock.
// Poll it with trxPoll.
func lockWaiting(ctx context.Context, db *sql.DB, id int64) (bool, error) {
	var n int
	err := db.QueryRowContext(ctx,
		"SELECT COUNT(*) FROM information_schema.innodb_trx WHERE trx_mysql_thread_id = ? AND trx_state = 'LOCK WAIT'", id).Scan(&n)
	return n > 0, err
}

// rowLocked reports whether another transaction holds a lock on the rows
// that where selects in table, by trying to lock them with NOWAIT in a
// READ COMMITTED transaction (no gap locks) that it then rolls back.
// Unlike information_schema.innodb_trx, this is never stale.
func rowLocked(ctx context.Context, db *sql.DB, table, where string, args ...any) (bool, error) {
	tx, err := db.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelReadCommitted})
	if err != nil {
		return false, err
	}
	defer func() { _ = tx.Rollback() }()
	rows, err := tx.QueryContext(ctx, "SELECT 1 FROM "+table+" WHERE "+where+" FOR UPDATE NOWAIT", args...)
	switch errNumber(err) {
	case 0:
		if err != nil {
			return false, err
		}
		return false, rows.Close()
	case 1205, 3572:
		return true, nil
	}
	return false, err
}

// count returns SELECT COUNT(*) FROM table WHERE where (where may be "").
func count(t testing.TB, db *sql.DB, table, where string, args ...any) int {
	t.Helper()
	q := "SELECT COUNT(*) FROM " + table
	if where != "" {
		q += " WHERE " + where
	}
	var n int
	require.NoError(t, db.QueryRowContext(context.Background(), q, args...).Scan(&n))
	return n
}

// lockHolder runs a statement in a transaction on another connection and
// keeps that transaction, and so the statement's row locks, open until
// release is closed; then it rolls back.
type lockHolder struct {
	locked  chan struct{} // closed once the statement has run
	release chan struct{} // closed by the test to end the transaction
	done    chan error    // receives the holder's result once it has ended
}

// holdLocks starts a lockHolder that runs stmt on db.
func holdLocks(ctx context.Context, db *sql.DB, stmt string) *lockHolder {
	h := &lockHolder{locked: make(chan struct{}), release: make(chan struct{}), done: make(chan error, 1)}
	go func() {
		h.done <- func() error {
			tx, err := db.BeginTx(ctx, nil)
			if err != nil {
				return err
			}
			defer func() { _ = tx.Rollback() }()
			if _, err := tx.ExecContext(ctx, stmt); err != nil {
				return err
			}
			close(h.locked)
			select {
			case <-h.release:
			case <-ctx.Done():
				return ctx.Err()
			}
			return tx.Rollback()
		}()
	}()
	return h
}

// skipWithoutServerVar skips the test when the server has no system
// variable name; why says which servers have it.
func skipWithoutServerVar(t testing.TB, ctx context.Context, db *sql.DB, name, why string) {
	t.Helper()
	var v sql.NullString
	if err := db.QueryRowContext(ctx, "SELECT @@"+name).Scan(&v); err != nil {
		t.Skipf("server has no %s (%s): %v", name, why, err)
	}
}

// createRowTable creates a table like createTable and inserts the row (1, 0).
func createRowTable(t testing.TB, ctx context.Context, db *sql.DB, columns string) string {
	t.Helper()
	tbl := createTable(t, db, columns)
	_, err := db.ExecContext(ctx, "INSERT INTO "+tbl+" VALUES (1, 0)")
	require.NoError(t, err)
	return tbl
}
