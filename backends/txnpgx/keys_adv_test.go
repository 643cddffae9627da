package txnpgx_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/txnkit/txn"
	"github.com/txnkit/txn/backends/txnpgx"
	"github.com/txnkit/txn/internal/fakeclock"
	"github.com/txnkit/txn/internal/integrationtest"
)

// Guarantee 7 with DatabaseKeys: fn starts a Run on the same Runner with a
// fresh context (an audit row in its own transaction), naming the key its
// caller holds. The stall escape shares the key in the process, and the
// inner Run then must not wait in the database for the advisory lock its
// own caller holds: it commits, then the caller does, and no lock is left.
func TestDatabaseKeysFreshRunInFnOnHeldKey(t *testing.T) {
	pool := newPool(t, nil)
	tbl := newTable(t, pool, "id text PRIMARY KEY")
	clk := fakeclock.New(time.Now())
	r := txnpgx.New(pool, txn.DatabaseKeys(), txn.WithClock(clk))
	ctx := testCtx(t)
	done := make(chan error, 1)
	go func() {
		done <- r.Run(ctx, func(ctx context.Context, tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, "INSERT INTO "+tbl+" VALUES ('order')"); err != nil {
				return err
			}
			// A deadline of its own, shorter than the test's, so that
			// a wait on the caller fails the test instead of hanging it.
			ictx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			return r.Run(ictx, func(ctx context.Context, tx pgx.Tx) error {
				_, err := tx.Exec(ctx, "INSERT INTO "+tbl+" VALUES ('audit')")
				return err
			}, txn.Keys("k", "other"))
		}, txn.Keys("k"), txn.MaxAttempts(1))
	}()
	require.NoError(t, integrationtest.AdvanceStalls(t, clk, time.Hour, done))
	assert.Equal(t, 2, queryInt(t, pool, "SELECT count(*) FROM "+tbl))
	assert.Zero(t, advisoryLocks(t, pool))
	assert.Zero(t, r.AdmissionStats().Keys)
}

// A bank across three Runners over three pools (three processes) with
// DatabaseKeys, under READ COMMITTED, where the keys are the only
// protection of the read-modify-write: two keys named in either order,
// rows updated in the order named. No transfer is lost or doubled, none
// fails, and none deadlocks or conflicts.
func TestDatabaseKeysBankAcrossRunners(t *testing.T) {
	const accounts, initial = 4, 1000
	var runners []*txnpgx.Runner
	var pools []*pgxpool.Pool
	obs := &recorder{}
	for range 3 {
		cfg := poolConfig(t)
		cfg.MaxConns = 3
		p := newPool(t, cfg)
		pools = append(pools, p)
		runners = append(runners, txnpgx.New(p, txn.DatabaseKeys(), txn.WithObserver(obs)))
	}
	bank := &pgxDB{pool: pools[0]}
	tbl, ledger := integrationtest.KeyBankTables(t, bank, accounts, initial)
	out := integrationtest.RunKeyBank(t, testCtx(t), bank, runners, tbl, ledger, accounts, 4, 25)
	for _, o := range out {
		require.NoError(t, o.Err)
	}
	integrationtest.CheckKeyBank(t, bank, tbl, ledger, accounts, initial, out)
	assert.Empty(t, obs.retryCodes(), "transactions holding their keys conflicted")
	assert.Zero(t, advisoryLocks(t, pools[0]))
}

// The same bank on one Runner with keys held in the process only.
func TestKeysBankInProcess(t *testing.T) {
	const accounts, initial = 4, 1000
	cfg := poolConfig(t)
	cfg.MaxConns = 6
	pool := newPool(t, cfg)
	obs := &recorder{}
	r := txnpgx.New(pool, txn.WithObserver(obs))
	bank := &pgxDB{pool: pool}
	tbl, ledger := integrationtest.KeyBankTables(t, bank, accounts, initial)
	out := integrationtest.RunKeyBank(t, testCtx(t), bank, []*txnpgx.Runner{r}, tbl, ledger, accounts, 12, 25)
	for _, o := range out {
		require.NoError(t, o.Err)
	}
	integrationtest.CheckKeyBank(t, bank, tbl, ledger, accounts, initial, out)
	assert.Empty(t, obs.retryCodes(), "transactions holding their keys conflicted")
}

// The bank across three processes while their connections are killed at
// random (pg_terminate_backend), in fn, in COMMIT, or while waiting for a
// key: a killed holder frees its keys for the others, and every Run's
// outcome is reported as it happened: no lost or doubled transfer, none
// reported committed that was not, no lost update.
func TestDatabaseKeysBankWithKilledConnections(t *testing.T) {
	const accounts, initial = 4, 1000
	const app = "txnpgx_bank_kill"
	var runners []*txnpgx.Runner
	for range 3 {
		cfg := poolConfig(t)
		cfg.MaxConns = 3
		cfg.ConnConfig.RuntimeParams["application_name"] = app
		runners = append(runners, txnpgx.New(newPool(t, cfg), txn.DatabaseKeys(), txn.NoReconnectBudget()))
	}
	admin := newPool(t, nil)
	bank := &pgxDB{pool: admin}
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
			var ok bool
			err := admin.QueryRow(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
				WHERE application_name = $1 AND datname = current_database() AND state <> 'idle' ORDER BY random() LIMIT 1`, app).Scan(&ok)
			if err == nil && ok {
				n++
			}
		}
	}()
	out := integrationtest.RunKeyBank(t, ctx, bank, runners, tbl, ledger, accounts, 3, 20)
	close(stop)
	t.Logf("%d connections killed", <-killed)
	integrationtest.CheckKeyBank(t, bank, tbl, ledger, accounts, initial, out)
	for advisoryLocks(t, admin) != 0 {
		require.NoError(t, ctx.Err(), "advisory locks outlived their sessions")
	}
}

// oddKeys are keys that must each be a lock of their own, whatever they
// contain: text that means something to SQL, to the lock functions or to
// the array literal the locks are taken from, NUL bytes, invalid UTF-8,
// and long keys that share a long prefix.
func oddKeys() []string {
	long := strings.Repeat("x", 64)
	return []string{
		"'", `"`, `\`, "'); SELECT pg_sleep(10); --", "1}'::bigint[]); DROP TABLE x; --", "{1,2}", ",", "NULL",
		"a\x00b", "a\x00c", "\x00", "\xff\xfe", "κλειδί", "🔑", " k", "k ",
		long + "1", long + "2", strings.Repeat("y", 10000) + "1", strings.Repeat("y", 10000) + "2",
	}
}

// Every odd key is taken and released like any other: a Run on it commits,
// and while another process holds it a Run on it waits, and a Run on any
// other odd key (one sharing a 64-character prefix with it included) does
// not. The duplicate keys of a call are taken once.
func TestDatabaseKeysOddKeys(t *testing.T) {
	p1, p2 := newPool(t, nil), newPool(t, nil)
	r1 := txnpgx.New(p1, txn.DatabaseKeys())
	r2 := txnpgx.New(p2, txn.DatabaseKeys())
	ctx := testCtx(t)
	keys := oddKeys()
	require.Len(t, txnpgx.KeyHashes(keys), len(keys), "two odd keys share a lock")
	require.NoError(t, r1.Run(ctx, func(context.Context, pgx.Tx) error { return nil }, txn.Keys(append(keys, keys...)...)))
	for i, k := range keys {
		finish := holdKey(t, ctx, r1, k)
		other := keys[(i+1)%len(keys)]
		require.NoError(t, r2.Run(ctx, func(context.Context, pgx.Tx) error { return nil }, txn.Keys(other)), "key %q waited for %q", other, k)
		wctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		ran := false
		err := r2.Run(wctx, func(context.Context, pgx.Tx) error { ran = true; return nil }, txn.Keys(k))
		cancel()
		require.ErrorIs(t, err, context.DeadlineExceeded, "key %q", k)
		require.False(t, ran, "key %q was taken twice", k)
		require.NoError(t, finish())
	}
	for advisoryLocks(t, p1) != 0 {
		require.NoError(t, ctx.Err(), "advisory locks outlived their Runs")
	}
}

// A Run that holds a key while fn ignores the end of its context (it
// returns well after the deadline) releases the key when it ends, for the
// Run of another process that waited for it.
func TestDatabaseKeysHolderPastDeadlineReleases(t *testing.T) {
	p1, p2 := newPool(t, nil), newPool(t, nil)
	r1 := txnpgx.New(p1, txn.DatabaseKeys())
	r2 := txnpgx.New(p2, txn.DatabaseKeys())
	ctx := testCtx(t)
	hctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	entered := make(chan struct{})
	holder := make(chan error, 1)
	go func() {
		holder <- r1.Run(hctx, func(ctx context.Context, _ pgx.Tx) error {
			close(entered)
			<-ctx.Done()
			time.Sleep(100 * time.Millisecond) // fn does not care
			return nil
		}, txn.Keys("late"))
	}()
	<-entered
	waiter := make(chan error, 1)
	go func() {
		waiter <- r2.Run(ctx, func(context.Context, pgx.Tx) error { return nil }, txn.Keys("late"))
	}()
	require.Error(t, <-holder)
	select {
	case err := <-waiter:
		require.NoError(t, err)
	case <-time.After(waitLimit):
		require.FailNow(t, "the key outlived the Run that held it")
	}
	assert.Zero(t, advisoryLocks(t, p1))
}

// A pool of two connections, shared by two Runners, and twenty Runs on
// three keys (two each, so that they all overlap) whose fn takes a while,
// while another process holds one of the keys for a time: no Run hangs,
// waiting for a key in the database never keeps the pool from the Runs
// that hold keys, every Run returns by its deadline (committed, or with
// its context's error), and nothing is held afterwards.
func TestDatabaseKeysSmallPoolManyRuns(t *testing.T) {
	cfg := poolConfig(t)
	cfg.MaxConns = 2
	pool := newPool(t, cfg)
	rs := []*txnpgx.Runner{txnpgx.New(pool, txn.DatabaseKeys()), txnpgx.New(pool, txn.DatabaseKeys())}
	other := newPool(t, nil)
	ctx := testCtx(t)
	finish := holdKey(t, ctx, txnpgx.New(other, txn.DatabaseKeys()), "k0")
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
			err := rs[i%2].Run(rctx, func(ctx context.Context, tx pgx.Tx) error {
				_, err := tx.Exec(ctx, "SELECT pg_sleep(0.05)")
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
	for advisoryLocks(t, pool) != 0 {
		require.NoError(t, ctx.Err(), "advisory locks outlived their Runs")
	}
	assert.Zero(t, rs[0].AdmissionStats().InFlight)
	assert.Zero(t, rs[0].AdmissionStats().Keys)
	require.NoError(t, rs[1].Run(ctx, func(context.Context, pgx.Tx) error { return nil }, txn.Keys("k0", "k1", "k2")))
}

// A wait for a key that another process holds is bounded by the Run's
// context, as a wait for a key held in the process is, not by the
// session's lock_timeout or statement_timeout (often set for a role, to
// bound the application's own statements): the Run commits once the key
// is free, and fn's statements still run under the session's timeouts.
func TestDatabaseKeysWaitOutlastsSessionTimeouts(t *testing.T) {
	for _, set := range []string{"lock_timeout", "statement_timeout"} {
		t.Run(set, func(t *testing.T) {
			p1 := newPool(t, nil)
			cfg := poolConfig(t)
			cfg.ConnConfig.RuntimeParams[set] = "100"
			p2 := newPool(t, cfg)
			r1 := txnpgx.New(p1, txn.DatabaseKeys())
			r2 := txnpgx.New(p2, txn.DatabaseKeys())
			ctx := testCtx(t)
			finish := holdKey(t, ctx, r1, "timeouts")
			done := make(chan error, 1)
			var inFn string
			go func() {
				done <- r2.Run(ctx, func(ctx context.Context, tx pgx.Tx) error {
					return tx.QueryRow(ctx, "SELECT current_setting($1)", set).Scan(&inFn)
				}, txn.Keys("timeouts"))
			}()
			for keyWaiters(t, p1, "timeouts") != 1 {
				require.NoError(t, ctx.Err(), "the second Run never waited on the advisory lock")
			}
			// Four times the session's timeout.
			select {
			case err := <-done:
				require.FailNow(t, "the wait for the key ended before the key was free", "%v", err)
			case <-time.After(400 * time.Millisecond):
			}
			require.NoError(t, finish())
			require.NoError(t, <-done)
			assert.Equal(t, "100ms", inFn)
			assert.Zero(t, advisoryLocks(t, p1))
		})
	}
}

// Three Runners over three pools (three processes) increment counters
// through key sets of two or three keys named in every order ({a,b} and
// {b,a}, {a,b,c} and {c,a}, ...), each read-modify-writing its rows in
// the order named under READ COMMITTED: every Run commits, none deadlocks
// or conflicts, no increment is lost.
func TestDatabaseKeysOverlappingSetsAnyOrder(t *testing.T) {
	var runners []*txnpgx.Runner
	obs := &recorder{}
	var admin *pgxpool.Pool
	for range 3 {
		cfg := poolConfig(t)
		cfg.MaxConns = 3
		p := newPool(t, cfg)
		admin = p
		runners = append(runners, txnpgx.New(p, txn.DatabaseKeys(), txn.WithObserver(obs)))
	}
	tbl, want := integrationtest.RunKeySets(t, testCtx(t), &pgxDB{pool: admin}, runners)
	for i, k := range integrationtest.KeySetRows() {
		assert.Equal(t, want[i], queryInt(t, admin, "SELECT v FROM "+tbl+" WHERE id = $1", k), "row %s: lost update", k)
	}
	assert.Empty(t, obs.retryCodes(), "transactions holding their keys conflicted or deadlocked")
	assert.Zero(t, advisoryLocks(t, admin))
}

// Another process holds a key for a long time. The Runs of this process
// queued on it wait in the process, behind the one that waits for the
// advisory lock: stall intervals pass, but nothing of this process can
// release the key, and escaping would only send one more Run per interval
// to wait in PostgreSQL on a connection of the pool, until the pool is
// full of them and a Run on another key cannot begin.
func TestDatabaseKeysLongHeldKeyLeavesPoolFree(t *testing.T) {
	cfg := poolConfig(t)
	cfg.MaxConns = 3
	pool := newPool(t, cfg)
	mon := newPool(t, nil)
	clk := fakeclock.New(time.Now())
	r := txnpgx.New(pool, txn.DatabaseKeys(), txn.WithClock(clk))
	ctx := testCtx(t)
	finish := holdKey(t, ctx, txnpgx.New(mon, txn.DatabaseKeys()), "hot")
	const hot = 5
	done := make(chan error, hot)
	for range hot {
		go func() {
			done <- r.Run(ctx, func(context.Context, pgx.Tx) error { return nil }, txn.Keys("hot"))
		}()
	}
	for keyWaiters(t, mon, "hot") != 1 {
		require.NoError(t, ctx.Err(), "no Run waited on the advisory lock")
	}
	for range 5 {
		clk.Advance(time.Hour)
		time.Sleep(50 * time.Millisecond) // time for an admitted Run to reach the database
	}
	cold := make(chan error, 1)
	go func() {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		cold <- r.Run(cctx, func(context.Context, pgx.Tx) error { return nil }, txn.Keys("cold"))
	}()
	require.NoError(t, integrationtest.AdvanceStalls(t, clk, time.Hour, cold), "a Run on another key could not begin")
	assert.Equal(t, 1, keyWaiters(t, mon, "hot"), "Runs of one process waiting for one key in the database")
	require.NoError(t, finish())
	for range hot {
		require.NoError(t, integrationtest.AdvanceStalls(t, clk, time.Hour, done))
	}
	assert.Zero(t, advisoryLocks(t, mon))
}
