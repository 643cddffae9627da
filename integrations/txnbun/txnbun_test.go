package txnbun_test

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/txnkit/txn"
	"github.com/txnkit/txn/integrations/txnbun"
	"github.com/uptrace/bun"
)

// retries records the errors Run retried.
type retries struct {
	txn.NopObserver
	mu   sync.Mutex
	errs []error
}

func (r *retries) RetryScheduled(_ context.Context, e txn.RetryEvent) {
	r.mu.Lock()
	r.errs = append(r.errs, e.Err)
	r.mu.Unlock()
}

func (r *retries) all() []error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]error(nil), r.errs...)
}

// TestConflictRetried makes two transactions read the same row, meet at a
// barrier, and write it: PostgreSQL fails one with 40001 (REPEATABLE READ),
// MariaDB with a 1213 deadlock (both hold a shared lock), SQLite with
// SQLITE_BUSY (a deferred transaction that has read cannot wait for the
// write lock). Run retries the loser on a fresh transaction: no increment is
// lost, and each Run's OnCommit callback runs once.
func TestConflictRetried(t *testing.T) {
	forEach(t, func(t *testing.T, s *server) {
		ctx := ctxT(t)
		rec := &retries{}
		r := s.runner(txn.WithObserver(rec), txn.WithBackoff(txn.Constant(time.Millisecond))).WithBegin(s.conflictOpts...)
		bar := newBarrier(2)
		var attempts, callbacks atomic.Int32
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for g := range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				first := true
				errs[g] = r.Run(ctx, func(ctx context.Context, tx bun.Tx) error {
					attempts.Add(1)
					var n int64
					if err := tx.NewRaw(s.readForConflict, 1).Scan(ctx, &n); err != nil {
						return err
					}
					if err := txn.OnCommit(ctx, func() { callbacks.Add(1) }); err != nil {
						return err
					}
					if first {
						first = false
						if err := bar.wait(ctx); err != nil {
							return err
						}
					}
					_, err := tx.NewUpdate().Model(&counter{ID: 1, N: n + 1}).WherePK().Exec(ctx)
					return err
				})
			}()
		}
		wg.Wait()
		require.NoError(t, errs[0])
		require.NoError(t, errs[1])
		assert.Equal(t, int64(2), counterN(t, s.db, 1), "no increment lost")
		assert.Equal(t, int32(2), callbacks.Load(), "one OnCommit per committed Run")
		got := rec.all()
		require.NotEmpty(t, got, "the two transactions conflicted")
		assert.GreaterOrEqual(t, attempts.Load(), int32(3))
		for _, err := range got {
			assert.Equal(t, txn.ClassRetryable, s.classify(err), "retried error %v", err)
		}
		t.Logf("%s: %d attempts, first retried error: %v", s.name, attempts.Load(), got[0])
	})
}

// TestNestedRunRollsBackToSavepoint: a nested Run whose fn fails with a
// permanent error is rolled back to its savepoint, with its OnCommit
// callbacks; the outer transaction goes on and commits the rest, and each
// kept callback runs once.
func TestNestedRunRollsBackToSavepoint(t *testing.T) {
	forEach(t, func(t *testing.T, s *server) {
		ctx := ctxT(t)
		r := s.runner()
		errRefused := errors.New("inner refused")
		var outer, kept, undone atomic.Int32
		err := r.Run(ctx, func(ctx context.Context, tx bun.Tx) error {
			if err := addNote(ctx, tx, "outer"); err != nil {
				return err
			}
			require.NoError(t, txn.OnCommit(ctx, func() { outer.Add(1) }))
			err := r.Run(ctx, func(ctx context.Context, tx bun.Tx) error {
				if err := addNote(ctx, tx, "inner-undone"); err != nil {
					return err
				}
				require.NoError(t, txn.OnCommit(ctx, func() { undone.Add(1) }))
				return errRefused
			})
			require.ErrorIs(t, err, errRefused)
			return r.Run(ctx, func(ctx context.Context, tx bun.Tx) error {
				require.NoError(t, txn.OnCommit(ctx, func() { kept.Add(1) }))
				return addNote(ctx, tx, "inner-kept")
			})
		})
		require.NoError(t, err)
		assert.Equal(t, []string{"outer", "inner-kept"}, notes(t, s.db))
		assert.Equal(t, int32(1), outer.Load())
		assert.Equal(t, int32(1), kept.Load())
		assert.Equal(t, int32(0), undone.Load(), "a rolled-back savepoint's callback never runs")
	})
}

// provoke makes the statement run in tx fail with a real retryable error,
// with the help of s.other:
//   - PostgreSQL (REPEATABLE READ) and SQLite (deferred): another
//     connection commits an update of the row tx read before; tx's update
//     of it then fails with 40001 / SQLITE_BUSY_SNAPSHOT;
//   - MariaDB: tx locks row 1, a heavier transaction locks row 2 and waits
//     for row 1, tx asks for row 2: InnoDB breaks the deadlock by rolling
//     back the lighter transaction, tx, with 1213. The other transaction
//     then adds its 100 and commits.
//
// Either way the other side adds 100 to row 1.
func provoke(ctx context.Context, t *testing.T, s *server, tx bun.Tx) error {
	if !s.is("mariadb") {
		_, err := s.other.NewRaw("UPDATE txnbun_counter SET n = n + 100 WHERE id = 1").Exec(ctx)
		require.NoError(t, err)
		_, err = tx.NewRaw("UPDATE txnbun_counter SET n = n + 1 WHERE id = 1").Exec(ctx)
		return err
	}
	var n int64
	require.NoError(t, tx.NewRaw("SELECT n FROM txnbun_counter WHERE id = 1 FOR UPDATE").Scan(ctx, &n))
	otx, err := s.other.BeginTx(ctx, nil)
	require.NoError(t, err)
	_, err = otx.NewRaw("UPDATE txnbun_filler SET n = n + 1").Exec(ctx)
	require.NoError(t, err)
	require.NoError(t, otx.NewRaw("SELECT n FROM txnbun_counter WHERE id = 2 FOR UPDATE").Scan(ctx, &n))
	done := make(chan error, 1)
	go func() {
		_, err := otx.NewRaw("UPDATE txnbun_counter SET n = n + 100 WHERE id = 1").Exec(ctx)
		if err != nil {
			_ = otx.Rollback()
			done <- err
			return
		}
		done <- otx.Commit()
	}()
	_, err = tx.NewRaw("UPDATE txnbun_counter SET n = n + 1 WHERE id = 2").Exec(ctx)
	require.NoError(t, <-done, "the heavier transaction is not the deadlock victim")
	return err
}

// TestNestedRunConflictRestartsWholeTransaction: a nested Run meets a real retryable
// error (see provoke). Whether fn returns the error or swallows it and goes
// on writing, the outermost Run rolls the whole attempt back and runs fn
// again; nothing of the failed attempt is committed and its OnCommit
// callback never runs.
func TestNestedRunConflictRestartsWholeTransaction(t *testing.T) {
	for _, swallow := range []bool{false, true} {
		name := "propagated"
		if swallow {
			name = "swallowed"
		}
		t.Run(name, func(t *testing.T) {
			forEach(t, func(t *testing.T, s *server) {
				nestedRestart(t, s, swallow)
			})
		})
	}
}

func nestedRestart(t *testing.T, s *server, swallow bool) {
	ctx := ctxT(t)
	r := s.runner(txn.WithBackoff(txn.Constant(time.Millisecond))).WithBegin(s.conflictOpts...)
	var attempts, callbacks int
	var first error
	err := r.Run(ctx, func(ctx context.Context, tx bun.Tx) error {
		attempts++
		a := attempts
		var n int64
		// The first read takes the snapshot (PostgreSQL, SQLite).
		if err := tx.NewRaw("SELECT n FROM txnbun_counter WHERE id = 1").Scan(ctx, &n); err != nil {
			return err
		}
		if !s.is("sqlite") { // a write would take SQLite's write lock
			if err := addNote(ctx, tx, fmt.Sprintf("%d:before", a)); err != nil {
				return err
			}
		}
		if err := txn.OnCommit(ctx, func() { callbacks++ }); err != nil {
			return err
		}
		err := r.Run(ctx, func(ctx context.Context, tx bun.Tx) error {
			if a == 1 {
				return provoke(ctx, t, s, tx)
			}
			_, err := tx.NewRaw("UPDATE txnbun_counter SET n = n + 1 WHERE id = 1").Exec(ctx)
			return err
		})
		if a == 1 {
			first = err
		}
		if err != nil && !swallow {
			return err
		}
		if err := addNote(ctx, tx, fmt.Sprintf("%d:after", a)); err != nil && a > 1 {
			return err
		}
		return nil
	})
	require.NoError(t, err)
	require.Error(t, first, "the nested Run met a conflict")
	assert.Equal(t, txn.ClassRetryable, s.classify(first), "%v", first)
	assert.Equal(t, 2, attempts)
	assert.Equal(t, 1, callbacks)
	assert.Equal(t, int64(101), counterN(t, s.db, 1), "the other side's 100 and one increment of ours")
	want := []string{"2:before", "2:after"}
	if s.is("sqlite") {
		want = want[1:]
	}
	assert.Equal(t, want, notes(t, s.db), "nothing of the failed attempt committed")
}

// TestPanicRollsBack: a panic in fn rolls the transaction back, releases
// its connection, is not retried, and reaches the caller unchanged.
func TestPanicRollsBack(t *testing.T) {
	forEach(t, func(t *testing.T, s *server) {
		ctx := ctxT(t)
		r := s.runner()
		var attempts, callbacks int
		require.PanicsWithValue(t, "boom", func() {
			_ = r.Run(ctx, func(ctx context.Context, tx bun.Tx) error {
				attempts++
				require.NoError(t, addNote(ctx, tx, "panicked"))
				require.NoError(t, txn.OnCommit(ctx, func() { callbacks++ }))
				panic("boom")
			})
		})
		assert.Equal(t, 1, attempts)
		assert.Equal(t, 0, callbacks)
		assert.Empty(t, notes(t, s.db))
		assert.Equal(t, 0, s.db.Stats().InUse, "the connection went back to the pool")
		require.NoError(t, r.Run(ctx, func(ctx context.Context, tx bun.Tx) error { return addNote(ctx, tx, "after") }))
		assert.Equal(t, []string{"after"}, notes(t, s.db))
	})
}

// TestBankWorkload runs 16 goroutines moving money between 5 accounts in
// random order (deadlocks on MariaDB, serialization failures and deadlocks
// on PostgreSQL under REPEATABLE READ, lock waits on SQLite), each transfer
// writing a ledger row, and checks that every Run returned nil, that money
// was neither made nor lost, that no balance went negative, and that each
// balance equals what the ledger says (one row per committed transfer).
func TestBankWorkload(t *testing.T) {
	const (
		workers   = 16
		transfers = 20
		accounts  = 5
		initial   = 1000
	)
	forEach(t, func(t *testing.T, s *server) {
		ctx := ctxT(t)
		accts := make([]account, accounts)
		for i := range accts {
			accts[i] = account{ID: int64(i + 1), Balance: initial}
		}
		_, err := s.db.NewInsert().Model(&accts).Exec(ctx)
		require.NoError(t, err)
		opts := []txn.RunnerOption{txn.MaxAttempts(100)}
		rec := &retries{}
		opts = append(opts, txn.WithObserver(rec))
		r := s.runner(opts...)
		if s.is("postgres") {
			r = r.WithBegin(s.conflictOpts...)
		}
		var committed, moved, applied atomic.Int64
		var wg sync.WaitGroup
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rnd := rand.New(rand.NewPCG(uint64(w), 1))
				for range transfers {
					from := rnd.Int64N(accounts) + 1
					to := (from+rnd.Int64N(accounts-1))%accounts + 1
					amount := rnd.Int64N(50) + 1
					var did bool
					err := r.Run(ctx, func(ctx context.Context, tx bun.Tx) error {
						did = false
						a := account{ID: from}
						q := tx.NewSelect().Model(&a).WherePK()
						if !s.is("sqlite") {
							q = q.For("UPDATE")
						}
						if err := q.Scan(ctx); err != nil {
							return err
						}
						if a.Balance < amount {
							return nil
						}
						if _, err := tx.NewUpdate().Model((*account)(nil)).Set("balance = balance - ?", amount).Where("id = ?", from).Exec(ctx); err != nil {
							return err
						}
						if _, err := tx.NewUpdate().Model((*account)(nil)).Set("balance = balance + ?", amount).Where("id = ?", to).Exec(ctx); err != nil {
							return err
						}
						if _, err := tx.NewInsert().Model(&ledger{Src: from, Dst: to, Amount: amount}).Exec(ctx); err != nil {
							return err
						}
						did = true
						return nil
					})
					if !assert.NoError(t, err) {
						return
					}
					committed.Add(1)
					if did {
						applied.Add(1)
						moved.Add(amount)
					}
				}
			}()
		}
		wg.Wait()
		assert.Equal(t, int64(workers*transfers), committed.Load())
		var got []account
		require.NoError(t, s.db.NewSelect().Model(&got).Order("id").Scan(ctx))
		var sum int64
		for _, a := range got {
			assert.GreaterOrEqual(t, a.Balance, int64(0), "account %d", a.ID)
			sum += a.Balance
		}
		assert.Equal(t, int64(accounts*initial), sum, "money is neither made nor lost")
		// Every committed transfer left exactly one ledger row, and the
		// ledger explains every balance: no attempt committed twice or
		// half.
		var entries []ledger
		require.NoError(t, s.db.NewSelect().Model(&entries).Scan(ctx))
		assert.Len(t, entries, int(applied.Load()), "one ledger row per committed transfer")
		want := map[int64]int64{}
		for _, a := range got {
			want[a.ID] = initial
		}
		for _, e := range entries {
			want[e.Src] -= e.Amount
			want[e.Dst] += e.Amount
		}
		for _, a := range got {
			assert.Equal(t, want[a.ID], a.Balance, "account %d matches the ledger", a.ID)
		}
		t.Logf("%s: %d transfers, %d moved, %d retries", s.name, committed.Load(), moved.Load(), len(rec.all()))
	})
}

// TestOptionsAndNil covers the adapter's own input checks.
func TestOptionsAndNil(t *testing.T) {
	ctx := context.Background()
	fn := func(context.Context, bun.Tx) error { return nil }
	require.ErrorIs(t, txnbun.New(nil).Run(ctx, fn), txn.ErrNilRunner)
	require.ErrorIs(t, txnbun.New(nil).Run(ctx, fn), txn.ErrNilRunner)
	forEach(t, func(t *testing.T, s *server) {
		require.NoError(t, txnbun.New(s.db).Run(ctx, fn))
		r := s.runner()
		require.ErrorIs(t, r.WithBegin(txn.NewBeginOption[bun.Tx]("other", 42)).Run(ctx, fn), txn.ErrBadOption)
		ro := sql.TxOptions{ReadOnly: true}
		require.NoError(t, r.WithBegin(txnbun.TxOptions(ro)).Run(ctx, fn))
		err := r.Run(ctx, func(ctx context.Context, tx bun.Tx) error { return tx.Commit() })
		require.ErrorIs(t, err, txn.ErrFnFinishedTx)
	})
}

// TestClassify covers the connection rule under every classifier.
func TestClassify(t *testing.T) {
	assert.Equal(t, txn.ClassPermanent, txnbun.Classify(nil))
	assert.Equal(t, txn.ClassPermanent, txnbun.Classify(errors.New("x")))
	assert.Equal(t, txn.ClassConnLost, txnbun.Classify(fmt.Errorf("w: %w", driver.ErrBadConn)))
}
