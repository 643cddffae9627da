package txnsqlite_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/txnkit/txn"
	"github.com/txnkit/txn/backends/txnsqlite"
	"modernc.org/sqlite"
)

// openDSN opens path with the raw modernc.org/sqlite parameters params.
func openDSN(t *testing.T, path, params string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", path+"?"+params)
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	require.NoError(t, db.Ping())
	return db
}

// recorder is an Observer that keeps the retries it sees and calls onRetry
// after each.
type recorder struct {
	txn.NopObserver
	mu      sync.Mutex
	retries []txn.RetryEvent
	commits int
	onRetry func()
}

func (r *recorder) RetryScheduled(_ context.Context, e txn.RetryEvent) {
	r.mu.Lock()
	r.retries = append(r.retries, e)
	f := r.onRetry
	r.mu.Unlock()
	if f != nil {
		f()
	}
}

func (r *recorder) Committed(context.Context, txn.CommitEvent) {
	r.mu.Lock()
	r.commits++
	r.mu.Unlock()
}

func (r *recorder) codes() []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []int
	for _, e := range r.retries {
		out = append(out, sqliteCode(e.Err))
	}
	return out
}

// sqliteCode returns the SQLite result code in err's chain, or -1.
func sqliteCode(err error) int {
	var e *sqlite.Error
	if errors.As(err, &e) {
		return e.Code()
	}
	return -1
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// busyRun is the scene of the SQLITE_BUSY tests: one connection holds the
// write lock of a WAL database (busy_timeout 0) while a Runner on a second
// connection, opened with params, inserts a row and registers an OnCommit
// callback. The holder commits when the Runner schedules its first retry.
// It returns the observer, the executions of fn and the callbacks run.
func busyRun(t *testing.T, params string) (rec *recorder, db *sql.DB, attempts, callbacks int32) {
	t.Helper()
	ctx := ctxT(t)
	path := filepath.Join(t.TempDir(), "busy.db")
	holder := openDSN(t, path, "_pragma=journal_mode(WAL)&_pragma=busy_timeout(0)")
	_, err := holder.Exec("CREATE TABLE kv (k TEXT PRIMARY KEY, v INTEGER)")
	require.NoError(t, err)
	db = openDSN(t, path, params)

	hold, err := holder.BeginTx(ctx, nil)
	require.NoError(t, err)
	_, err = hold.Exec("INSERT INTO kv VALUES ('holder', 1)")
	require.NoError(t, err)

	var once sync.Once
	rec = &recorder{}
	rec.onRetry = func() { once.Do(func() { require.NoError(t, hold.Commit()) }) }
	r := txnsqlite.New(db, txn.WithObserver(rec), txn.WithBackoff(txn.Constant(time.Millisecond)), txn.MaxAttempts(0))

	var n, cbs atomic.Int32
	err = r.Run(ctx, func(ctx context.Context, tx *sql.Tx) error {
		n.Add(1)
		if err := txn.OnCommit(ctx, func() { cbs.Add(1) }); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, "INSERT INTO kv VALUES ('runner', 2)")
		return err
	})
	require.NoError(t, err)
	require.NotEmpty(t, rec.codes())
	return rec, db, n.Load(), cbs.Load()
}

// TestBusyWriteLockHeld provokes SQLITE_BUSY (5): with busy_timeout=0 a
// second connection's BEGIN IMMEDIATE fails at once while the first holds the
// write lock. Run retries, and commits once the lock is released; the
// OnCommit callback of the failed attempt never runs.
func TestBusyWriteLockHeld(t *testing.T) {
	rec, db, attempts, callbacks := busyRun(t, "_pragma=busy_timeout(0)&_txlock=immediate")
	assert.Equal(t, txnsqlite.CodeBusy, rec.codes()[0], "first failure is SQLITE_BUSY")
	assert.Equal(t, txn.ClassRetryable, rec.retries[0].Class)
	// BEGIN IMMEDIATE failed before fn ran: fn ran once, in the attempt that
	// committed.
	assert.Equal(t, int32(1), attempts)
	assert.Equal(t, int32(1), callbacks)

	var n int
	require.NoError(t, db.QueryRow("SELECT count(*) FROM kv").Scan(&n))
	assert.Equal(t, 2, n)
}

// TestBusyDeferredWrite provokes SQLITE_BUSY inside fn: a deferred
// transaction's first write finds the write lock taken and busy_timeout is 0.
// The failed attempt's OnCommit callback never runs.
func TestBusyDeferredWrite(t *testing.T) {
	rec, _, attempts, callbacks := busyRun(t, "_pragma=busy_timeout(0)")
	assert.Equal(t, txnsqlite.CodeBusy, rec.codes()[0]&0xff, "first failure is SQLITE_BUSY or an extended BUSY code")
	assert.GreaterOrEqual(t, attempts, int32(2))
	assert.Equal(t, int32(1), callbacks, "only the committed attempt's callback runs")
}

// TestDeferredUpgradeIgnoresBusyTimeout shows the other half of the
// deferred-transaction problem: a deferred transaction that has read and
// then writes while another connection holds the write lock gets
// SQLITE_BUSY at once, although busy_timeout (60 s) is twice the test's
// deadline, because SQLite does not call the busy handler for a connection
// holding a read snapshot: the write fails while the other connection
// still holds the lock, and Run retries it. Had SQLite waited for the busy
// handler, Run would have met the deadline first.
func TestDeferredUpgradeIgnoresBusyTimeout(t *testing.T) {
	ctx := ctxT(t)
	path := filepath.Join(t.TempDir(), "upgrade.db")
	holder := openDSN(t, path, "_pragma=journal_mode(WAL)&_pragma=busy_timeout(60000)")
	_, err := holder.Exec("CREATE TABLE counter (id INTEGER PRIMARY KEY, n INTEGER NOT NULL); INSERT INTO counter VALUES (1, 0)")
	require.NoError(t, err)
	db := openDSN(t, path, "_pragma=busy_timeout(60000)") // deferred BEGIN

	var once sync.Once
	hold, err := holder.BeginTx(ctx, nil)
	require.NoError(t, err)
	_, err = hold.Exec("UPDATE counter SET n = n + 100 WHERE id = 1")
	require.NoError(t, err)
	rec := &recorder{}
	rec.onRetry = func() { once.Do(func() { require.NoError(t, hold.Commit()) }) }
	r := txnsqlite.New(db, txn.WithObserver(rec), txn.WithBackoff(txn.Constant(time.Millisecond)))
	attempts := 0
	err = r.Run(ctx, func(ctx context.Context, tx *sql.Tx) error {
		attempts++
		var n int
		if err := tx.QueryRowContext(ctx, "SELECT n FROM counter WHERE id = 1").Scan(&n); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, "UPDATE counter SET n = ? WHERE id = 1", n+1)
		return err
	})
	require.NoError(t, err, "Run (a wait for the busy handler would have met the deadline)")
	assert.Equal(t, []int{txnsqlite.CodeBusy}, rec.codes())
	var n int
	require.NoError(t, db.QueryRow("SELECT n FROM counter").Scan(&n))
	assert.Equal(t, 101, n)
}

// TestBusySnapshot provokes SQLITE_BUSY_SNAPSHOT (517): a deferred
// transaction reads, another connection commits a write, and the first then
// tries to write on its stale snapshot. SQLite fails it at once although
// busy_timeout (60 s) is twice the test's deadline: had SQLite waited for
// the busy handler, Run would have met the deadline first. Run re-runs fn
// on a fresh snapshot, so no update is lost.
func TestBusySnapshot(t *testing.T) {
	ctx := ctxT(t)
	path := filepath.Join(t.TempDir(), "snap.db")
	other := openDSN(t, path, "_pragma=journal_mode(WAL)&_pragma=busy_timeout(60000)")
	_, err := other.Exec("CREATE TABLE counter (id INTEGER PRIMARY KEY, n INTEGER NOT NULL); INSERT INTO counter VALUES (1, 0)")
	require.NoError(t, err)
	db := openDSN(t, path, "_pragma=busy_timeout(60000)") // deferred BEGIN

	rec := &recorder{}
	r := txnsqlite.New(db, txn.WithObserver(rec), txn.WithBackoff(txn.Constant(0)))
	var attempts atomic.Int32
	err = r.Run(ctx, func(ctx context.Context, tx *sql.Tx) error {
		a := attempts.Add(1)
		var n int
		if err := tx.QueryRowContext(ctx, "SELECT n FROM counter WHERE id = 1").Scan(&n); err != nil {
			return err
		}
		if a == 1 {
			// Another connection commits after our snapshot was taken.
			_, err := other.ExecContext(ctx, "UPDATE counter SET n = n + 100 WHERE id = 1")
			require.NoError(t, err)
		}
		_, err := tx.ExecContext(ctx, "UPDATE counter SET n = ? WHERE id = 1", n+1)
		return err
	})
	require.NoError(t, err, "Run (a wait for the busy handler would have met the deadline)")
	assert.Equal(t, []int{txnsqlite.CodeBusySnapshot}, rec.codes())
	assert.Equal(t, int32(2), attempts.Load())
	var n int
	require.NoError(t, db.QueryRow("SELECT n FROM counter").Scan(&n))
	assert.Equal(t, 101, n, "the concurrent update is not lost")
}

// TestLockedSharedCache provokes SQLITE_LOCKED (6) between two connections
// of one shared cache: B read-locks t1, A writes t2 (A is the cache's
// writer) and then t1, while B waits to write t2. SQLite's unlock-notify
// detects the deadlock and fails one of them with SQLITE_LOCKED; Run rolls
// it back, the other commits, and the retry commits too.
func TestLockedSharedCache(t *testing.T) {
	ctx := ctxT(t)
	dsn := "file:" + filepath.Join(t.TempDir(), "shared.db") + "?cache=shared"
	open := func() *sql.DB {
		db, err := sql.Open("sqlite", dsn)
		require.NoError(t, err)
		db.SetMaxOpenConns(1)
		t.Cleanup(func() { _ = db.Close() })
		return db
	}
	dbA, dbB := open(), open()
	_, err := dbA.Exec("CREATE TABLE t1 (x INTEGER); CREATE TABLE t2 (x INTEGER); INSERT INTO t1 VALUES (0)")
	require.NoError(t, err)

	rec := &recorder{}
	opts := []txn.RunnerOption{txn.WithObserver(rec), txn.WithBackoff(txn.Constant(time.Millisecond)), txn.MaxAttempts(0)}
	rA, rB := txnsqlite.New(dbA, opts...), txnsqlite.New(dbB, opts...)
	bRead, aWrote := make(chan struct{}), make(chan struct{})
	var onceB, onceA sync.Once
	var wg sync.WaitGroup
	var errA, errB error
	wg.Add(2)
	go func() {
		defer wg.Done()
		errB = rB.Run(ctx, func(ctx context.Context, tx *sql.Tx) error {
			var x int
			if err := tx.QueryRowContext(ctx, "SELECT x FROM t1").Scan(&x); err != nil {
				return err
			}
			first := false
			onceB.Do(func() { first = true; close(bRead) })
			if first {
				<-aWrote
			}
			_, err := tx.ExecContext(ctx, "INSERT INTO t2 VALUES (2)")
			return err
		})
	}()
	go func() {
		defer wg.Done()
		<-bRead
		errA = rA.Run(ctx, func(ctx context.Context, tx *sql.Tx) error {
			if _, err := tx.ExecContext(ctx, "INSERT INTO t2 VALUES (1)"); err != nil {
				return err
			}
			onceA.Do(func() { close(aWrote) })
			_, err := tx.ExecContext(ctx, "INSERT INTO t1 VALUES (1)")
			return err
		})
	}()
	wg.Wait()
	require.NoError(t, errA)
	require.NoError(t, errB)
	codes := rec.codes()
	require.NotEmpty(t, codes, "one side must have hit the deadlock")
	for _, c := range codes {
		assert.Equal(t, txnsqlite.CodeLocked, c&0xff)
	}
	var n int
	require.NoError(t, dbA.QueryRow("SELECT count(*) FROM t2").Scan(&n))
	assert.Equal(t, 2, n)
}

// TestImmediateNoRetries runs concurrent read-modify-write increments on a
// database from Open (BEGIN IMMEDIATE, busy_timeout 5 s): writers queue for
// the lock at BEGIN, so nothing fails and nothing is retried.
func TestImmediateNoRetries(t *testing.T) {
	ctx := ctxT(t)
	db, err := txnsqlite.Open(filepath.Join(t.TempDir(), "imm.db"))
	require.NoError(t, err)
	defer db.Close()
	_, err = db.Exec("CREATE TABLE counter (id INTEGER PRIMARY KEY, n INTEGER NOT NULL); INSERT INTO counter VALUES (1, 0)")
	require.NoError(t, err)
	n := increments(t, ctx, db, 4, 25)
	assert.Equal(t, 100, n.total)
	assert.Zero(t, n.retries, "BEGIN IMMEDIATE writers never fail on the lock upgrade")
}

// TestDeferredContention runs the same increments with deferred BEGIN and
// busy_timeout 0: upgrades fail with BUSY or BUSY_SNAPSHOT and are retried,
// and still no increment is lost.
func TestDeferredContention(t *testing.T) {
	ctx := ctxT(t)
	path := filepath.Join(t.TempDir(), "def.db")
	db := openDSN(t, path, "_pragma=journal_mode(WAL)&_pragma=busy_timeout(0)")
	_, err := db.Exec("CREATE TABLE counter (id INTEGER PRIMARY KEY, n INTEGER NOT NULL); INSERT INTO counter VALUES (1, 0)")
	require.NoError(t, err)
	n := increments(t, ctx, db, 4, 25)
	assert.Equal(t, 100, n.total)
	for _, c := range n.codes {
		assert.Equal(t, txnsqlite.CodeBusy, c&0xff, "only BUSY-family errors are retried")
	}
	t.Logf("deferred: %d retries, codes %v", n.retries, n.codes)
}

type incResult struct {
	total, retries int
	codes          []int
}

func increments(t *testing.T, ctx context.Context, db *sql.DB, workers, each int) incResult {
	t.Helper()
	rec := &recorder{}
	r := txnsqlite.New(db, txn.WithObserver(rec), txn.MaxAttempts(0), txn.WithBackoff(txn.FullJitter(time.Millisecond, 20*time.Millisecond)))
	var wg sync.WaitGroup
	errs := make(chan error, workers*each)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				errs <- r.Run(ctx, func(ctx context.Context, tx *sql.Tx) error {
					var n int
					if err := tx.QueryRowContext(ctx, "SELECT n FROM counter WHERE id = 1").Scan(&n); err != nil {
						return err
					}
					_, err := tx.ExecContext(ctx, "UPDATE counter SET n = ? WHERE id = 1", n+1)
					return err
				})
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	var res incResult
	require.NoError(t, db.QueryRow("SELECT n FROM counter WHERE id = 1").Scan(&res.total))
	res.codes = rec.codes()
	res.retries = len(res.codes)
	return res
}

// TestDeferredReadsBesideWriter checks that a Deferred call on a database
// from Open reads while another connection holds the write lock, where an
// immediate transaction would have to wait.
func TestDeferredReadsBesideWriter(t *testing.T) {
	ctx := ctxT(t)
	path := filepath.Join(t.TempDir(), "ro.db")
	db, err := txnsqlite.Open(path)
	require.NoError(t, err)
	defer db.Close()
	_, err = db.Exec("CREATE TABLE kv (k TEXT PRIMARY KEY, v INTEGER); INSERT INTO kv VALUES ('a', 1)")
	require.NoError(t, err)
	writer, err := db.BeginTx(ctx, nil) // BEGIN IMMEDIATE: holds the write lock
	require.NoError(t, err)
	defer writer.Rollback()

	r := txnsqlite.New(db)
	short, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	v, err := txn.Do(short, r.WithBegin(txnsqlite.Deferred()), func(ctx context.Context, tx *sql.Tx) (int, error) {
		var v int
		err := tx.QueryRowContext(ctx, "SELECT v FROM kv WHERE k = 'a'").Scan(&v)
		return v, err
	})
	require.NoError(t, err)
	assert.Equal(t, 1, v)

	// The same read without Deferred begins IMMEDIATE and waits for the
	// lock; on a handle with a short busy_timeout it fails with SQLITE_BUSY.
	impatient := openDSN(t, path, "_pragma=busy_timeout(50)&_txlock=immediate")
	err = txnsqlite.New(impatient).Run(ctx, func(ctx context.Context, tx *sql.Tx) error { return nil }, txn.MaxAttempts(1))
	require.ErrorIs(t, err, txn.ErrAttemptsExhausted)
	assert.Equal(t, txnsqlite.CodeBusy, sqliteCode(err))
	err = txnsqlite.New(impatient).WithBegin(txnsqlite.Deferred()).Run(ctx, func(ctx context.Context, tx *sql.Tx) error { return nil }, txn.MaxAttempts(1))
	require.NoError(t, err)
}

// TestSavepointAndOnCommit runs savepoints, a nested Run and OnCommit
// through real SQLite: a failed savepoint's rows and callbacks are dropped,
// the rest commits, and callbacks run once after the commit.
func TestSavepointAndOnCommit(t *testing.T) {
	ctx := ctxT(t)
	db, err := txnsqlite.Open(filepath.Join(t.TempDir(), "sp.db"))
	require.NoError(t, err)
	defer db.Close()
	_, err = db.Exec("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE)")
	require.NoError(t, err)
	r := txnsqlite.New(db)

	var events []string
	errDup := errors.New("bad row")
	err = r.Run(ctx, func(ctx context.Context, tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, "INSERT INTO items (name) VALUES ('a')"); err != nil {
			return err
		}
		require.NoError(t, txn.OnCommit(ctx, func() { events = append(events, "a") }))
		// A savepoint whose statement violates the UNIQUE constraint:
		// SQLite's error is permanent, so only the savepoint is undone.
		err := txn.Savepoint(ctx, func(ctx context.Context, tx *sql.Tx) error {
			require.NoError(t, txn.OnCommit(ctx, func() { events = append(events, "dup") }))
			if _, err := tx.ExecContext(ctx, "INSERT INTO items (name) VALUES ('b')"); err != nil {
				return err
			}
			_, err := tx.ExecContext(ctx, "INSERT INTO items (name) VALUES ('a')")
			return err
		})
		require.Error(t, err)
		assert.Equal(t, txn.ClassPermanent, txnsqlite.Classify(err))
		// A nested Run joins through a savepoint too.
		err = r.Run(ctx, func(ctx context.Context, tx *sql.Tx) error {
			if _, err := tx.ExecContext(ctx, "INSERT INTO items (name) VALUES ('c')"); err != nil {
				return err
			}
			return txn.OnCommit(ctx, func() { events = append(events, "c") })
		})
		require.NoError(t, err)
		err = r.Run(ctx, func(ctx context.Context, tx *sql.Tx) error {
			if _, err := tx.ExecContext(ctx, "INSERT INTO items (name) VALUES ('d')"); err != nil {
				return err
			}
			return errDup
		})
		require.ErrorIs(t, err, errDup)
		assert.Empty(t, events, "nothing runs before the commit")
		return nil
	})
	require.NoError(t, err)
	assert.Equal(t, []string{"a", "c"}, events)
	rows, err := db.Query("SELECT name FROM items ORDER BY name")
	require.NoError(t, err)
	defer rows.Close()
	var names []string
	for rows.Next() {
		var s string
		require.NoError(t, rows.Scan(&s))
		names = append(names, s)
	}
	require.NoError(t, rows.Err())
	assert.Equal(t, []string{"a", "c"}, names)
}

// TestPermanentErrorNotRetried checks that a constraint violation is
// returned as it is, after one attempt, with nothing committed.
func TestPermanentErrorNotRetried(t *testing.T) {
	ctx := ctxT(t)
	db, err := txnsqlite.Open(filepath.Join(t.TempDir(), "perm.db"))
	require.NoError(t, err)
	defer db.Close()
	_, err = db.Exec("CREATE TABLE u (id INTEGER PRIMARY KEY)")
	require.NoError(t, err)
	r := txnsqlite.New(db)
	attempts := 0
	err = r.Run(ctx, func(ctx context.Context, tx *sql.Tx) error {
		attempts++
		if _, err := tx.ExecContext(ctx, "INSERT INTO u VALUES (1)"); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, "INSERT INTO u VALUES (1)")
		return err
	})
	require.Error(t, err)
	var se *sqlite.Error
	require.ErrorAs(t, err, &se)
	assert.Equal(t, 19, se.Code()&0xff, "SQLITE_CONSTRAINT")
	assert.Equal(t, 1, attempts)
	var n int
	require.NoError(t, db.QueryRow("SELECT count(*) FROM u").Scan(&n))
	assert.Zero(t, n)
}

// realErrors provokes real driver errors for the classifier table.
func realErrors(t *testing.T) map[string]error {
	t.Helper()
	dir := t.TempDir()
	out := map[string]error{}

	db := openDSN(t, filepath.Join(dir, "e.db"), "_pragma=journal_mode(WAL)&_pragma=busy_timeout(0)")
	db.SetMaxOpenConns(1)
	_, err := db.Exec("CREATE TABLE t (x INTEGER PRIMARY KEY); INSERT INTO t VALUES (1), (2)")
	require.NoError(t, err)
	_, out["syntax"] = db.Exec("SELEC 1")
	_, out["constraint"] = db.Exec("INSERT INTO t VALUES (1)")
	_, out["no such table"] = db.Exec("SELECT * FROM nope")

	// SQLITE_LOCKED inside one connection: DROP TABLE while a statement
	// is still reading it.
	tx, err := db.Begin()
	require.NoError(t, err)
	rows, err := tx.Query("SELECT x FROM t")
	require.NoError(t, err)
	require.True(t, rows.Next())
	_, out["locked"] = tx.Exec("DROP TABLE t")
	require.NoError(t, rows.Close())
	require.NoError(t, tx.Rollback())

	// SQLITE_BUSY: another connection holds the write lock.
	other := openDSN(t, filepath.Join(dir, "e.db"), "_pragma=busy_timeout(0)&_txlock=immediate")
	hold, err := db.Begin()
	require.NoError(t, err)
	_, err = hold.Exec("INSERT INTO t VALUES (3)")
	require.NoError(t, err)
	_, out["busy"] = other.Begin()
	require.NoError(t, hold.Rollback())

	// SQLITE_BUSY_SNAPSHOT: a deferred reader upgrades after another commit.
	reader := openDSN(t, filepath.Join(dir, "e.db"), "_pragma=busy_timeout(0)")
	rtx, err := reader.Begin()
	require.NoError(t, err)
	var x int
	require.NoError(t, rtx.QueryRow("SELECT x FROM t WHERE x = 1").Scan(&x))
	_, err = db.Exec("INSERT INTO t VALUES (4)")
	require.NoError(t, err)
	_, out["busy snapshot"] = rtx.Exec("INSERT INTO t VALUES (5)")
	require.NoError(t, rtx.Rollback())
	return out
}

// TestClassify is the classifier's table, over real driver errors (also
// wrapped) and other values.
func TestClassify(t *testing.T) {
	errs := realErrors(t)
	cases := []struct {
		name string
		err  error
		code int // expected Code(), -1 for non-SQLite errors
		want txn.Class
	}{
		{"nil", nil, -1, txn.ClassPermanent},
		{"plain", errors.New("database is locked"), -1, txn.ClassPermanent},
		{"context", context.DeadlineExceeded, -1, txn.ClassPermanent},
		{"sql.ErrNoRows", sql.ErrNoRows, -1, txn.ClassPermanent},
		{"syntax", errs["syntax"], 1, txn.ClassPermanent},
		{"no such table", errs["no such table"], 1, txn.ClassPermanent},
		{"constraint", errs["constraint"], 1555, txn.ClassPermanent}, // SQLITE_CONSTRAINT_PRIMARYKEY
		{"busy", errs["busy"], txnsqlite.CodeBusy, txn.ClassRetryable},
		{"busy snapshot", errs["busy snapshot"], txnsqlite.CodeBusySnapshot, txn.ClassRetryable},
		{"locked", errs["locked"], txnsqlite.CodeLocked, txn.ClassRetryable},
		{"wrapped busy", fmt.Errorf("transfer: %w", errs["busy"]), txnsqlite.CodeBusy, txn.ClassRetryable},
		{"joined busy snapshot", errors.Join(errors.New("x"), errs["busy snapshot"]), txnsqlite.CodeBusySnapshot, txn.ClassRetryable},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.err != nil {
				require.Equal(t, c.code, sqliteCode(c.err), "provoked error: %v", c.err)
			}
			assert.Equal(t, c.want, txnsqlite.Classify(c.err))
		})
	}
}

// TestClassifyCodes covers the result codes that cannot be provoked on
// demand (SQLITE_BUSY_RECOVERY needs a crashed WAL writer,
// SQLITE_BUSY_TIMEOUT a blocking-lock build of SQLite).
func TestClassifyCodes(t *testing.T) {
	for code, want := range map[int]txn.Class{
		txnsqlite.CodeBusy:              txn.ClassRetryable,
		txnsqlite.CodeBusyRecovery:      txn.ClassRetryable,
		txnsqlite.CodeBusySnapshot:      txn.ClassRetryable,
		txnsqlite.CodeBusyTimeout:       txn.ClassRetryable,
		txnsqlite.CodeLocked:            txn.ClassRetryable,
		txnsqlite.CodeLockedSharedCache: txn.ClassRetryable,
		6 | 2<<8:                        txn.ClassRetryable, // SQLITE_LOCKED_VTAB
		1:                               txn.ClassPermanent, // SQLITE_ERROR
		9:                               txn.ClassPermanent, // SQLITE_INTERRUPT
		10:                              txn.ClassPermanent, // SQLITE_IOERR
		13:                              txn.ClassPermanent, // SQLITE_FULL
		19:                              txn.ClassPermanent, // SQLITE_CONSTRAINT
		2067:                            txn.ClassPermanent, // SQLITE_CONSTRAINT_UNIQUE
		8:                               txn.ClassPermanent, // SQLITE_READONLY
		8 | 5<<8:                        txn.ClassPermanent, // SQLITE_READONLY_DBMOVED
	} {
		t.Run(strconv.Itoa(code), func(t *testing.T) {
			assert.Equal(t, want, txnsqlite.ClassifyCode(code), "code %d", code)
		})
	}
	assert.Equal(t, 261, txnsqlite.CodeBusyRecovery)
	assert.Equal(t, 517, txnsqlite.CodeBusySnapshot)
	assert.Equal(t, 773, txnsqlite.CodeBusyTimeout)
	assert.Equal(t, 262, txnsqlite.CodeLockedSharedCache)
}

func TestDSNAndOpen(t *testing.T) {
	for _, bad := range []string{"", ":memory:", "file::memory:?cache=shared", "a?b.db"} {
		t.Run(fmt.Sprintf("%q", bad), func(t *testing.T) {
			_, err := txnsqlite.DSN(bad)
			assert.Error(t, err, "DSN(%q)", bad)
			_, err = txnsqlite.Open(bad)
			assert.Error(t, err, "Open(%q)", bad)
		})
	}
	_, err := txnsqlite.Open(filepath.Join(t.TempDir(), "missing-dir", "x.db"))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "txnsqlite: open")

	db, err := txnsqlite.Open(filepath.Join(t.TempDir(), "ok.db"))
	require.NoError(t, err)
	defer db.Close()
	var mode string
	var timeout, fk int
	require.NoError(t, db.QueryRow("PRAGMA journal_mode").Scan(&mode))
	require.NoError(t, db.QueryRow("PRAGMA busy_timeout").Scan(&timeout))
	require.NoError(t, db.QueryRow("PRAGMA foreign_keys").Scan(&fk))
	assert.Equal(t, "wal", mode)
	assert.Equal(t, int(txnsqlite.DefaultBusyTimeout.Milliseconds()), timeout)
	assert.Equal(t, 1, fk)
}

func TestNilDB(t *testing.T) {
	r := txnsqlite.New(nil)
	require.ErrorIs(t, r.Err(), txn.ErrNilRunner)
	err := r.Run(context.Background(), func(context.Context, *sql.Tx) error { return nil })
	require.ErrorIs(t, err, txn.ErrNilRunner)
}
