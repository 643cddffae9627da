package integrationtest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/txnkit/txn"
)

// ConflictRetried makes two Runs read the same counter, meet at a barrier
// and write it back incremented: the database reports the lost race
// (PostgreSQL 40001 under REPEATABLE READ, MariaDB 1213 on the lock
// upgrade, SQLite SQLITE_BUSY on the write of a stale snapshot) to one of
// them, whose Run rolls back and runs fn again in a fresh transaction. The
// counter ends at 2, fn ran once more per retry, every retry was caused by
// the driver's own error, and each Run's OnCommit callback ran exactly once.
func ConflictRetried[T any](t *testing.T, db DB[T], prefix string) {
	d := db.Dialect()
	ctx := Context(t)
	tbl := CreateTable(t, db, prefix, "id INT PRIMARY KEY, n INT NOT NULL")
	require.NoError(t, db.Exec(ctx, "INSERT INTO "+tbl+" VALUES (1, 0)"))

	rec := &Recorder{}
	r := db.Runner(txn.WithObserver(rec)).WithBegin(db.TxOptions(d.TxOptions))
	bar := NewBarrier(2)
	var calls, onCommit [2]atomic.Int32
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for g := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[g] = r.Run(ctx, func(ctx context.Context, tx T) error {
				var wait func() error
				if calls[g].Add(1) == 1 {
					wait = func() error { return bar.Wait(ctx) }
				}
				if err := txn.OnCommit(ctx, func() { onCommit[g].Add(1) }); err != nil {
					return err
				}
				return increment(ctx, db, tx, tbl, wait)
			})
		}()
	}
	wg.Wait()
	require.NoError(t, errs[0])
	require.NoError(t, errs[1])
	assert.Equal(t, 2, oneInt(t, ctx, db, "SELECT n FROM "+tbl+" WHERE id = 1"), "no update was lost")
	assert.Equal(t, int32(1), onCommit[0].Load())
	assert.Equal(t, int32(1), onCommit[1].Load())
	retries, commits := rec.Snapshot()
	assert.Equal(t, 2, commits)
	require.NotEmpty(t, retries, "one Run lost the race")
	if !d.SingleWriter {
		// SQLite may fail the retry too, while the winner has not
		// committed yet.
		assert.Len(t, retries, 1)
	}
	assert.Equal(t, int32(2+len(retries)), calls[0].Load()+calls[1].Load(), "fn ran once more per retry")
	for _, e := range retries {
		assert.Equal(t, txn.ClassRetryable, e.Class)
		assert.True(t, d.Conflict(e.Err), "retried on the driver's error: %v", e.Err)
	}
}

// NestedRollsBackToSavepoint runs nested Runs inside a transaction: one
// that fails with a permanent error is rolled back to its savepoint (its row
// and its OnCommit callback are gone, the transaction goes on), one that
// succeeds is released and kept.
func NestedRollsBackToSavepoint[T any](t *testing.T, db DB[T], prefix string) {
	ctx := Context(t)
	tbl := CreateTable(t, db, prefix, "name VARCHAR(64) PRIMARY KEY")
	r := db.Runner()
	insert := func(ctx context.Context, tx T, name string) error {
		return db.TxExec(ctx, tx, "INSERT INTO "+tbl+" (name) VALUES (?)", name)
	}

	var ran []string
	calls := 0
	err := r.Run(ctx, func(ctx context.Context, tx T) error {
		calls++
		if err := insert(ctx, tx, "outer-1"); err != nil {
			return err
		}
		if err := txn.OnCommit(ctx, func() { ran = append(ran, "outer") }); err != nil {
			return err
		}
		err := r.Run(ctx, func(ctx context.Context, tx T) error {
			if err := insert(ctx, tx, "inner-rolled-back"); err != nil {
				return err
			}
			if err := txn.OnCommit(ctx, func() { ran = append(ran, "inner-rolled-back") }); err != nil {
				return err
			}
			return errInner
		})
		if !errors.Is(err, errInner) {
			return txn.Permanent(fmt.Errorf("nested Run returned %v, want errInner", err))
		}
		n, err := db.TxInt(ctx, tx, "SELECT COUNT(*) FROM "+tbl+" WHERE name = 'inner-rolled-back'")
		if err != nil {
			return err
		}
		if n != 0 {
			return txn.Permanent(errors.New("the rolled-back savepoint's row is still visible"))
		}
		err = r.Run(ctx, func(ctx context.Context, tx T) error {
			if err := insert(ctx, tx, "inner-kept"); err != nil {
				return err
			}
			return txn.OnCommit(ctx, func() { ran = append(ran, "inner-kept") })
		})
		if err != nil {
			return err
		}
		return insert(ctx, tx, "outer-2")
	})
	require.NoError(t, err)
	assert.Equal(t, 1, calls)
	got, err := db.Strings(ctx, "SELECT name FROM "+tbl+" ORDER BY name")
	require.NoError(t, err)
	assert.Equal(t, []string{"inner-kept", "outer-1", "outer-2"}, got)
	assert.Equal(t, []string{"outer", "inner-kept"}, ran)
}

// NestedConflictRestarts makes a nested Run lose a real race against
// another connection: the competitor reads the counter, meets the nested
// Run at a barrier and writes it (on MariaDB both hold a share lock and
// deadlock; the competitor has written more rows, so InnoDB picks the
// Runner's transaction as the victim). The nested Run returns the driver's
// error unchanged and the outermost Run restarts the whole transaction: the
// outer rows of the failed attempt are gone.
//
// Only the committed attempt's OnCommit callback runs.
//
// With swallow, fn ignores the nested error and goes on writing; nothing of
// the failed attempt may commit (the Runner rolls the whole transaction back
// when the nested Run fails, so fn's later statements cannot autocommit).
func NestedConflictRestarts[T any](t *testing.T, db DB[T], prefix string, swallow bool) {
	d := db.Dialect()
	ctx := Context(t)
	counter := CreateTable(t, db, prefix, "id INT PRIMARY KEY, n INT NOT NULL")
	log := CreateTable(t, db, prefix, "name VARCHAR(64) PRIMARY KEY")
	bulk := CreateTable(t, db, prefix, "id INT PRIMARY KEY")
	require.NoError(t, db.Exec(ctx, "INSERT INTO "+counter+" VALUES (1, 0)"))
	logName := func(ctx context.Context, tx T, name string) error {
		return db.TxExec(ctx, tx, "INSERT INTO "+log+" (name) VALUES (?)", name)
	}

	bar := NewBarrier(2)
	updated := make(chan struct{})
	otherDone := make(chan error, 1)
	go func() { otherDone <- competitor(ctx, db, counter, bulk, bar, updated) }()

	rec := &Recorder{}
	r := db.Runner(txn.WithObserver(rec)).WithBegin(db.TxOptions(d.TxOptions))
	var nestedErrs []error
	attempts := 0
	var committed []int
	err := r.Run(ctx, func(ctx context.Context, tx T) error {
		attempts++
		attempt := attempts
		if err := txn.OnCommit(ctx, func() { committed = append(committed, attempt) }); err != nil {
			return err
		}
		if !d.SingleWriter {
			// SQLite: a write here would take the only write lock and
			// keep the competitor from racing.
			if err := logName(ctx, tx, fmt.Sprintf("before-%d", attempt)); err != nil {
				return err
			}
		}
		nerr := r.Run(ctx, func(ctx context.Context, tx T) error {
			var wait func() error
			if attempt == 1 {
				wait = func() error {
					if err := bar.Wait(ctx); err != nil {
						return err
					}
					if d.ShareLock != "" {
						return nil // MariaDB: the deadlock needs both writes pending
					}
					select {
					case <-updated:
						return nil
					case <-ctx.Done():
						return ctx.Err()
					}
				}
			}
			return increment(ctx, db, tx, counter, wait)
		})
		nestedErrs = append(nestedErrs, nerr)
		if !swallow {
			if nerr != nil {
				return nerr
			}
			return logName(ctx, tx, fmt.Sprintf("after-%d", attempt))
		}
		// fn ignores every error from here on: the attempt that lost
		// must still commit nothing.
		_ = logName(ctx, tx, fmt.Sprintf("after-%d", attempt))
		return nil
	})
	require.NoError(t, err)
	require.NoError(t, <-otherDone)

	require.Len(t, nestedErrs, 2)
	assert.True(t, d.Conflict(nestedErrs[0]), "the nested Run returned the driver's error unchanged: %v", nestedErrs[0])
	assert.NoError(t, nestedErrs[1])
	assert.Equal(t, 2, attempts)
	assert.Equal(t, []int{2}, committed, "the failed attempt's OnCommit callback never ran")
	retries, _ := rec.Snapshot()
	require.Len(t, retries, 1)
	assert.True(t, d.Conflict(retries[0].Err), "retried on %v", retries[0].Err)
	assert.Equal(t, 2, oneInt(t, ctx, db, "SELECT n FROM "+counter+" WHERE id = 1"), "the retried increment came after the competitor's")
	want := []string{"after-2", "before-2"}
	if d.SingleWriter {
		want = want[:1]
	}
	got, err := db.Strings(ctx, "SELECT name FROM "+log+" ORDER BY name")
	require.NoError(t, err)
	assert.Equal(t, want, got)
}

// competitor is the other connection of NestedConflictRestarts: it writes
// rows to bulk (except on SQLite, where that would take the write lock
// early), reads the counter, meets the Runner at bar, increments the
// counter, commits and closes updated.
func competitor[T any](ctx context.Context, db DB[T], counter, bulk string, bar *Barrier, updated chan struct{}) error {
	defer close(updated)
	tx, err := db.Begin(ctx)
	if err != nil {
		return err
	}
	defer db.Rollback(tx)
	if !db.Dialect().SingleWriter {
		vals := make([]string, 200)
		for i := range vals {
			vals[i] = fmt.Sprintf("(%d)", i)
		}
		if err := db.TxExec(ctx, tx, "INSERT INTO "+bulk+" VALUES "+strings.Join(vals, ",")); err != nil {
			return err
		}
	}
	if err := increment(ctx, db, tx, counter, func() error { return bar.Wait(ctx) }); err != nil {
		return err
	}
	return db.Commit(tx)
}

// PanicRollsBack panics in fn after a write: the panic reaches the caller
// unchanged and is not retried, the write and the OnCommit callback are
// gone, and the connection went back to the pool: the next Run on the same
// Runner commits.
func PanicRollsBack[T any](t *testing.T, db DB[T], prefix string) {
	ctx := Context(t)
	tbl := CreateTable(t, db, prefix, "name VARCHAR(64) PRIMARY KEY")
	r := db.Runner()
	ran := false
	calls := 0
	assert.PanicsWithValue(t, "boom", func() {
		_ = r.Run(ctx, func(ctx context.Context, tx T) error {
			calls++
			if err := db.TxExec(ctx, tx, "INSERT INTO "+tbl+" (name) VALUES (?)", "doomed"); err != nil {
				return err
			}
			if err := txn.OnCommit(ctx, func() { ran = true }); err != nil {
				return err
			}
			panic("boom")
		})
	})
	assert.Equal(t, 1, calls, "a panic is never retried")
	assert.False(t, ran)
	got, err := db.Strings(ctx, "SELECT name FROM "+tbl)
	require.NoError(t, err)
	assert.Empty(t, got)
	assert.Equal(t, 0, db.ConnsInUse(), "the connection was released")
	require.NoError(t, r.Run(ctx, func(ctx context.Context, tx T) error {
		return db.TxExec(ctx, tx, "INSERT INTO "+tbl+" (name) VALUES (?)", "after")
	}))
	got, err = db.Strings(ctx, "SELECT name FROM "+tbl)
	require.NoError(t, err)
	assert.Equal(t, []string{"after"}, got)
}

var errInsufficient = errors.New("insufficient funds")

// BankWorkload runs 16 goroutines moving money between 4 accounts for
// 1.5 s through one Runner. Each transfer reads its two accounts in a
// random order (locking them where the dialect has ForUpdate), so
// transfers deadlock or, on SQLite, find the database busy, and Run
// retries them. At the end the total is unchanged, every balance is the
// initial one plus what the ledger moved, the ledger has one row per
// successful Run, and no transfer gave up within 100 attempts.
func BankWorkload[T any](t *testing.T, db DB[T], prefix string) {
	const (
		accounts = 4
		workers  = 16
		initial  = 1000
		duration = 1500 * time.Millisecond
	)
	d := db.Dialect()
	ctx := Context(t)
	acct := CreateTable(t, db, prefix, "id INT PRIMARY KEY, balance INT NOT NULL")
	ledger := CreateTable(t, db, prefix, "id VARCHAR(64) PRIMARY KEY, src INT NOT NULL, dst INT NOT NULL, amount INT NOT NULL")
	for id := 1; id <= accounts; id++ {
		require.NoError(t, db.Exec(ctx, "INSERT INTO "+acct+" (id, balance) VALUES (?, ?)", id, initial))
	}

	rec := &Recorder{}
	r := db.Runner(txn.WithObserver(rec), txn.MaxAttempts(100))
	var ok, refused, exhausted atomic.Int64
	var mu sync.Mutex
	var unexpected []error
	stop := time.Now().Add(duration)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rnd := rand.New(rand.NewPCG(uint64(w), 7919))
			for seq := 0; time.Now().Before(stop) && ctx.Err() == nil; seq++ {
				src := rnd.IntN(accounts) + 1
				dst := rnd.IntN(accounts-1) + 1
				if dst >= src {
					dst++
				}
				amount := rnd.IntN(100) + 1
				id := fmt.Sprintf("%d-%d", w, seq)
				srcFirst := rnd.IntN(2) == 0
				err := r.Run(ctx, func(ctx context.Context, tx T) error {
					order := [2]int{dst, src}
					if srcFirst {
						order = [2]int{src, dst}
					}
					balance := map[int]int{}
					for _, a := range order {
						b, err := db.TxInt(ctx, tx, "SELECT balance FROM "+acct+" WHERE id = ?"+d.ForUpdate, a)
						if err != nil {
							return err
						}
						balance[a] = b
					}
					if balance[src] < amount {
						return errInsufficient
					}
					if err := db.TxExec(ctx, tx, "UPDATE "+acct+" SET balance = balance - ? WHERE id = ?", amount, src); err != nil {
						return err
					}
					if err := db.TxExec(ctx, tx, "UPDATE "+acct+" SET balance = balance + ? WHERE id = ?", amount, dst); err != nil {
						return err
					}
					return db.TxExec(ctx, tx, "INSERT INTO "+ledger+" (id, src, dst, amount) VALUES (?, ?, ?, ?)", id, src, dst, amount)
				})
				switch {
				case err == nil:
					ok.Add(1)
				case errors.Is(err, errInsufficient):
					refused.Add(1)
				case errors.Is(err, txn.ErrAttemptsExhausted):
					exhausted.Add(1)
				default:
					mu.Lock()
					unexpected = append(unexpected, err)
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	require.Empty(t, unexpected)

	assert.Equal(t, accounts*initial, oneInt(t, ctx, db, "SELECT SUM(balance) FROM "+acct), "money is conserved")
	assert.Equal(t, int(ok.Load()), oneInt(t, ctx, db, "SELECT COUNT(*) FROM "+ledger), "one ledger row per successful Run")
	for a := 1; a <= accounts; a++ {
		in := oneInt(t, ctx, db, "SELECT COALESCE(SUM(amount), 0) FROM "+ledger+" WHERE dst = ?", a)
		out := oneInt(t, ctx, db, "SELECT COALESCE(SUM(amount), 0) FROM "+ledger+" WHERE src = ?", a)
		b := oneInt(t, ctx, db, "SELECT balance FROM "+acct+" WHERE id = ?", a)
		assert.Equal(t, initial+in-out, b, "account %d matches the ledger", a)
		assert.GreaterOrEqual(t, b, 0)
	}
	retries, commits := rec.Snapshot()
	conflicts := 0
	for _, e := range retries {
		if d.Conflict(e.Err) {
			conflicts++
		}
	}
	t.Logf("%s: %d transfers committed, %d refused, %d gave up after 100 attempts; %d retries, %d of them on the driver's conflict error",
		d.Name, ok.Load(), refused.Load(), exhausted.Load(), len(retries), conflicts)
	assert.Equal(t, int(ok.Load()), commits)
	assert.Zero(t, exhausted.Load(), "no transfer gave up after 100 attempts")
	assert.Positive(t, ok.Load())
	assert.Positive(t, conflicts, "transfers conflicted and were retried")
}

// FnThatCommitsIsNeverRerun: fn commits the transaction itself with
// commit and returns an error asking for a retry (or nil, or with the
// context ending at the same moment): Run returns txn.ErrFnFinishedTx, fn
// ran once, and its row is committed once.
func FnThatCommitsIsNeverRerun[T any](t *testing.T, db DB[T], prefix string, commit func(T) error) {
	for _, tc := range []struct {
		name   string
		ret    error
		cancel bool
	}{
		{"Retry", txn.Retry(errors.New("version check failed")), false},
		{"nil", nil, false},
		{"Retry and context ends", txn.Retry(errors.New("version check failed")), true},
		{"nil and context ends", nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tbl := CreateTable(t, db, prefix, "name VARCHAR(64) PRIMARY KEY")
			ctx, cancel := context.WithCancel(Context(t))
			defer cancel()
			calls := 0
			err := db.Runner().Run(ctx, func(ctx context.Context, tx T) error {
				calls++
				if err := db.TxExec(ctx, tx, "INSERT INTO "+tbl+" (name) VALUES (?)", "row"); err != nil {
					return err
				}
				if err := commit(tx); err != nil {
					return txn.Permanent(err)
				}
				if tc.cancel {
					cancel()
				}
				return tc.ret
			})
			require.Error(t, err)
			assert.ErrorIs(t, err, txn.ErrFnFinishedTx)
			assert.Equal(t, 1, calls)
			got, err := db.Strings(Context(t), "SELECT name FROM "+tbl)
			require.NoError(t, err)
			assert.Equal(t, []string{"row"}, got)
		})
	}
}
