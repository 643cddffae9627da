package txnmysql_test

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/txnkit/txn"
	"github.com/txnkit/txn/backends/txnmysql"
	"github.com/txnkit/txn/internal/fakeclock"
	"github.com/txnkit/txn/internal/integrationtest"
)

// lockFree reports whether the named lock of key is free.
func lockFree(t *testing.T, db *sql.DB, key string) bool {
	t.Helper()
	var free sql.NullInt64
	require.NoError(t, db.QueryRow("SELECT IS_FREE_LOCK(?)", txnmysql.LockName(key)).Scan(&free))
	return free.Int64 == 1
}

// eventuallyFree fails unless the named lock of key is free within
// testTimeout. A Run that gave up waiting in GET_LOCK closed its
// connection, but the server notices that only at its next check (about
// once a second): until then the abandoned request can be granted, and
// hold the lock for that moment.
func eventuallyFree(t *testing.T, db *sql.DB, key string) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for !lockFree(t, db, key) {
		require.True(t, time.Now().Before(deadline), "the named lock of %q stayed taken", key)
		time.Sleep(10 * time.Millisecond)
	}
}

// Guarantee 7 with DatabaseKeys: fn starts a Run on the same Runner with a
// fresh context (an audit row in its own transaction), naming the key its
// caller holds. The stall escape shares the key in the process, and the
// inner Run then must not wait in GET_LOCK for the named lock its own
// caller holds: it commits, then the caller does, and no lock is left.
func TestDatabaseKeysFreshRunInFnOnHeldKey(t *testing.T) {
	db := openDB(t, nil)
	tbl := createTable(t, db, "id VARCHAR(16) PRIMARY KEY")
	clk := fakeclock.New(time.Now())
	r := txnmysql.New(db, txn.DatabaseKeys(), txn.WithClock(clk))
	ctx := testCtx(t)
	done := make(chan error, 1)
	go func() {
		done <- r.Run(ctx, func(ctx context.Context, tx *sql.Tx) error {
			if _, err := tx.ExecContext(ctx, "INSERT INTO "+tbl+" VALUES ('order')"); err != nil {
				return err
			}
			// A deadline of its own, shorter than the test's, so that
			// a wait on the caller fails the test instead of hanging it.
			ictx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			return r.Run(ictx, func(ctx context.Context, tx *sql.Tx) error {
				_, err := tx.ExecContext(ctx, "INSERT INTO "+tbl+" VALUES ('audit')")
				return err
			}, txn.Keys("k", "other"))
		}, txn.Keys("k"), txn.MaxAttempts(1))
	}()
	require.NoError(t, integrationtest.AdvanceStalls(t, clk, time.Hour, done))
	assert.Equal(t, 2, count(t, db, tbl, "1=1"))
	assert.True(t, lockFree(t, db, "k"))
	assert.True(t, lockFree(t, db, "other"))
	assert.Zero(t, r.AdmissionStats().Keys)
}

// mariaDB is db as the shared scenarios see it.
func mariaDB(db *sql.DB) *integrationtest.SQLDB {
	return &integrationtest.SQLDB{D: integrationtest.MariaDB(), DB: db, New: txnmysql.New, Options: txnmysql.TxOptions}
}

// readCommitted opens a pool of at most n connections whose transactions
// run at READ COMMITTED.
func readCommitted(t *testing.T, n int) *sql.DB {
	db := openDB(t, map[string]string{"tx_isolation": "'READ-COMMITTED'"})
	db.SetMaxOpenConns(n)
	return db
}

// A bank across three Runners over three pools (three processes) with
// DatabaseKeys, under READ COMMITTED, where the keys are the only
// protection of the read-modify-write: two keys named in either order,
// rows updated in the order named. No transfer is lost or doubled, none
// fails, deadlocks or conflicts.
func TestDatabaseKeysBankAcrossRunners(t *testing.T) {
	const accounts, initial = 4, 1000
	var runners []*txnmysql.Runner
	var dbs []*sql.DB
	obs := &integrationtest.Recorder{}
	for range 3 {
		db := readCommitted(t, 3)
		dbs = append(dbs, db)
		runners = append(runners, txnmysql.New(db, txn.DatabaseKeys(), txn.WithObserver(obs)))
	}
	bank := mariaDB(dbs[0])
	tbl, ledger := integrationtest.KeyBankTables(t, bank, accounts, initial)
	out := integrationtest.RunKeyBank(t, testCtx(t), bank, runners, tbl, ledger, accounts, 4, 20)
	for _, o := range out {
		require.NoError(t, o.Err)
	}
	integrationtest.CheckKeyBank(t, bank, tbl, ledger, accounts, initial, out)
	retries, _ := obs.Snapshot()
	assert.Empty(t, retries, "transactions holding their keys conflicted")
	for a := 1; a <= accounts; a++ {
		assert.True(t, lockFree(t, dbs[0], strconv.Itoa(a)))
	}
}

// The same bank on one Runner with keys held in the process only.
func TestKeysBankInProcess(t *testing.T) {
	const accounts, initial = 4, 1000
	db := readCommitted(t, 6)
	obs := &integrationtest.Recorder{}
	r := txnmysql.New(db, txn.WithObserver(obs))
	bank := mariaDB(db)
	tbl, ledger := integrationtest.KeyBankTables(t, bank, accounts, initial)
	out := integrationtest.RunKeyBank(t, testCtx(t), bank, []*txnmysql.Runner{r}, tbl, ledger, accounts, 12, 20)
	for _, o := range out {
		require.NoError(t, o.Err)
	}
	integrationtest.CheckKeyBank(t, bank, tbl, ledger, accounts, initial, out)
	retries, _ := obs.Snapshot()
	assert.Empty(t, retries, "transactions holding their keys conflicted")
}

// The bank across three processes while their connections are killed at
// random (KILL CONNECTION), in fn, in COMMIT, in GET_LOCK or as the locks
// are released: a killed holder frees its keys for the others, and every
// Run's outcome is reported as it happened: no lost or doubled transfer,
// none reported committed that was not, no lost update.
func TestDatabaseKeysBankWithKilledConnections(t *testing.T) {
	const accounts, initial = 4, 1000
	var runners []*txnmysql.Runner
	for range 3 {
		runners = append(runners, txnmysql.New(readCommitted(t, 3), txn.DatabaseKeys(), txn.NoReconnectBudget()))
	}
	admin := openDB(t, nil)
	admin.SetMaxOpenConns(1)
	bank := mariaDB(admin)
	tbl, ledger := integrationtest.KeyBankTables(t, bank, accounts, initial)
	ctx := testCtx(t)
	stop := make(chan struct{})
	killed := make(chan int, 1)
	go func() {
		n := 0
		defer func() { killed <- n }()
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			var id int64
			if err := admin.QueryRowContext(ctx, `SELECT ID FROM information_schema.PROCESSLIST
				WHERE DB = DATABASE() AND ID <> CONNECTION_ID() ORDER BY RAND() LIMIT 1`).Scan(&id); err != nil {
				continue
			}
			if _, err := admin.ExecContext(ctx, fmt.Sprintf("KILL CONNECTION %d", id)); err == nil {
				n++
			}
		}
	}()
	out := integrationtest.RunKeyBank(t, ctx, bank, runners, tbl, ledger, accounts, 3, 15)
	close(stop)
	t.Logf("%d connections killed", <-killed)
	integrationtest.CheckKeyBank(t, bank, tbl, ledger, accounts, initial, out)
	for a := 1; a <= accounts; a++ {
		eventuallyFree(t, admin, strconv.Itoa(a))
	}
}

// oddKeys are keys that must each be a lock of their own, whatever they
// contain: text that means something to SQL or to GET_LOCK, NUL bytes,
// invalid UTF-8, and keys longer than the 64 characters of a lock name
// that share their first 64 (or 10000) characters.
func oddKeys() []string {
	long := strings.Repeat("x", 64)
	return []string{
		"'", `"`, "`", `\`, "'); DO SLEEP(10); -- ", "%", "_", "NULL",
		"a\x00b", "a\x00c", "\x00", "\xff\xfe", "κλειδί", "🔑", " k", "k ", "K",
		long + "1", long + "2", strings.Repeat("y", 10000) + "1", strings.Repeat("y", 10000) + "2",
	}
}

// Every odd key is taken and released like any other: a Run on it commits,
// and while another process holds it a Run on it waits, and a Run on any
// other odd key (one sharing a 64-character prefix with it, or differing
// only in case, included) does not. The duplicate keys of a call are taken
// once.
func TestDatabaseKeysOddKeys(t *testing.T) {
	d1, d2 := openDB(t, nil), openDB(t, nil)
	r1 := txnmysql.New(d1, txn.DatabaseKeys())
	r2 := txnmysql.New(d2, txn.DatabaseKeys())
	ctx := testCtx(t)
	keys := oddKeys()
	require.NoError(t, r1.Run(ctx, func(context.Context, *sql.Tx) error { return nil }, txn.Keys(append(keys, keys...)...)))
	for i, k := range keys {
		finish := holdKey(t, ctx, r1, k)
		other := keys[(i+1)%len(keys)]
		require.NoError(t, r2.Run(ctx, func(context.Context, *sql.Tx) error { return nil }, txn.Keys(other)), "key %q waited for %q", other, k)
		wctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		ran := false
		err := r2.Run(wctx, func(context.Context, *sql.Tx) error { ran = true; return nil }, txn.Keys(k))
		cancel()
		require.ErrorIs(t, err, context.DeadlineExceeded, "key %q", k)
		require.False(t, ran, "key %q was taken twice", k)
		require.NoError(t, finish())
		eventuallyFree(t, d1, k)
	}
}

// A Run that holds a key while fn ignores the end of its context (it
// returns well after the deadline) releases the key when it ends, for the
// Run of another process that waited for it.
func TestDatabaseKeysHolderPastDeadlineReleases(t *testing.T) {
	d1, d2 := openDB(t, nil), openDB(t, nil)
	r1 := txnmysql.New(d1, txn.DatabaseKeys())
	r2 := txnmysql.New(d2, txn.DatabaseKeys())
	ctx := testCtx(t)
	hctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	entered := make(chan struct{})
	holder := make(chan error, 1)
	go func() {
		holder <- r1.Run(hctx, func(ctx context.Context, _ *sql.Tx) error {
			close(entered)
			<-ctx.Done()
			time.Sleep(100 * time.Millisecond) // fn does not care
			return nil
		}, txn.Keys("late"))
	}()
	<-entered
	waiter := make(chan error, 1)
	go func() {
		waiter <- r2.Run(ctx, func(context.Context, *sql.Tx) error { return nil }, txn.Keys("late"))
	}()
	require.Error(t, <-holder)
	select {
	case err := <-waiter:
		require.NoError(t, err)
	case <-time.After(testTimeout):
		require.FailNow(t, "the key outlived the Run that held it")
	}
	assert.True(t, lockFree(t, d1, "late"))
}

// A pool of two connections, shared by two Runners, and twenty Runs on
// three keys (two each, so that they all overlap) whose fn takes a while,
// while another process holds one of the keys for a time: no Run hangs,
// waiting for a key in the database never keeps the pool from the Runs
// that hold keys, every Run returns by its deadline (committed, or with
// its context's error), and nothing is held afterwards.
func TestDatabaseKeysSmallPoolManyRuns(t *testing.T) {
	db := openDB(t, nil)
	db.SetMaxOpenConns(2)
	rs := []*txnmysql.Runner{txnmysql.New(db, txn.DatabaseKeys()), txnmysql.New(db, txn.DatabaseKeys())}
	ctx := testCtx(t)
	finish := holdKey(t, ctx, txnmysql.New(openDB(t, nil), txn.DatabaseKeys()), "k0")
	time.AfterFunc(300*time.Millisecond, func() { _ = finish() })
	const deadline = time.Second
	var wg sync.WaitGroup
	var committed, expired atomic.Int32
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rctx, cancel := context.WithTimeout(ctx, deadline)
			defer cancel()
			start := time.Now()
			err := rs[i%2].Run(rctx, func(ctx context.Context, tx *sql.Tx) error {
				_, err := tx.ExecContext(ctx, "DO SLEEP(0.05)")
				return err
			}, txn.Keys(fmt.Sprint("k", i%3), fmt.Sprint("k", (i+1)%3)))
			assert.Less(t, time.Since(start), deadline+2*time.Second, "Run %d outlived its deadline", i)
			if err == nil {
				committed.Add(1)
				return
			}
			expired.Add(1)
			assert.ErrorIs(t, err, context.DeadlineExceeded, "Run %d", i)
		}()
	}
	wg.Wait()
	t.Logf("%d committed, %d expired", committed.Load(), expired.Load())
	assert.NotZero(t, committed.Load())
	for _, k := range []string{"k0", "k1", "k2"} {
		eventuallyFree(t, db, k)
	}
	assert.Zero(t, rs[0].AdmissionStats().InFlight)
	assert.Zero(t, rs[0].AdmissionStats().Keys)
	require.NoError(t, rs[1].Run(ctx, func(context.Context, *sql.Tx) error { return nil }, txn.Keys("k0", "k1", "k2")))
}

// A wait in GET_LOCK for a key that another process holds is bounded by
// the Run's context, as a wait for a key held in the process is, not by
// the session's max_statement_time (MariaDB; set for an account, to bound
// the application's own statements): the Run commits once the key is
// free, and fn's statements still run under the session's limit.
func TestDatabaseKeysWaitOutlastsStatementTimeLimit(t *testing.T) {
	d1 := openDB(t, nil)
	d2 := openDB(t, map[string]string{"max_statement_time": "0.2"})
	r1 := txnmysql.New(d1, txn.DatabaseKeys())
	r2 := txnmysql.New(d2, txn.DatabaseKeys())
	ctx := testCtx(t)
	finish := holdKey(t, ctx, r1, "limit")
	done := make(chan error, 1)
	var inFn float64
	go func() {
		done <- r2.Run(ctx, func(ctx context.Context, tx *sql.Tx) error {
			return tx.QueryRowContext(ctx, "SELECT @@max_statement_time").Scan(&inFn)
		}, txn.Keys("limit"))
	}()
	// Four times the session's limit.
	select {
	case err := <-done:
		require.FailNow(t, "the wait for the key ended before the key was free", "%v", err)
	case <-time.After(800 * time.Millisecond):
	}
	require.NoError(t, finish())
	require.NoError(t, <-done)
	assert.Equal(t, 0.2, inFn)
	eventuallyFree(t, d1, "limit")
}

// A GET_LOCK that the server ends while the Run's context lasts (KILL
// QUERY by an administrator) fails the Run without claiming that its
// context ended.
func TestDatabaseKeysKilledWaitIsNotADeadline(t *testing.T) {
	d1, d2 := openDB(t, nil), openDB(t, nil)
	r1 := txnmysql.New(d1, txn.DatabaseKeys())
	r2 := txnmysql.New(d2, txn.DatabaseKeys())
	ctx := testCtx(t)
	finish := holdKey(t, ctx, r1, "killed")
	defer func() { _ = finish() }()
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- r2.Run(wctx, func(context.Context, *sql.Tx) error { return nil }, txn.Keys("killed"), txn.MaxAttempts(1))
	}()
	var id int64
	for {
		err := d1.QueryRowContext(ctx, `SELECT ID FROM information_schema.PROCESSLIST
			WHERE INFO LIKE '%GET_LOCK%' AND INFO NOT LIKE '%PROCESSLIST%' AND DB = DATABASE()`).Scan(&id)
		if err == nil {
			break
		}
		require.ErrorIs(t, err, sql.ErrNoRows)
		require.NoError(t, ctx.Err(), "the second Run never waited on the named lock")
	}
	_, err := d1.ExecContext(ctx, fmt.Sprintf("KILL QUERY %d", id))
	require.NoError(t, err)
	err = <-done
	require.Error(t, err)
	assert.NoError(t, wctx.Err())
	assert.NotErrorIs(t, err, context.DeadlineExceeded)
	assert.Contains(t, err.Error(), "interrupted")
}

// Three Runners over three pools (three processes) increment counters
// through key sets of two or three keys named in every order ({a,b} and
// {b,a}, {a,b,c} and {c,a}, ...), each read-modify-writing its rows in
// the order named under READ COMMITTED: every Run commits, none deadlocks
// or conflicts, no increment is lost.
func TestDatabaseKeysOverlappingSetsAnyOrder(t *testing.T) {
	var runners []*txnmysql.Runner
	obs := &integrationtest.Recorder{}
	var admin *sql.DB
	for range 3 {
		admin = readCommitted(t, 3)
		runners = append(runners, txnmysql.New(admin, txn.DatabaseKeys(), txn.WithObserver(obs)))
	}
	tbl, want := integrationtest.RunKeySets(t, testCtx(t), mariaDB(admin), runners)
	for i, k := range integrationtest.KeySetRows() {
		var got int
		require.NoError(t, admin.QueryRow("SELECT v FROM "+tbl+" WHERE id = ?", k).Scan(&got))
		assert.Equal(t, want[i], got, "row %s: lost update", k)
		eventuallyFree(t, admin, k)
	}
	retries, _ := obs.Snapshot()
	assert.Empty(t, retries, "transactions holding their keys conflicted or deadlocked")
}
