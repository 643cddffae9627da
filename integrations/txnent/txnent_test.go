package txnent_test

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
	"github.com/txnkit/txn/integrations/txnent"
	"github.com/txnkit/txn/integrations/txnent/internal/ent"
	"github.com/txnkit/txn/integrations/txnent/internal/ent/account"
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
// barrier, and write it through the generated client: PostgreSQL fails one
// with 40001 (REPEATABLE READ), MariaDB with a 1213 deadlock (both hold a
// shared lock), SQLite with SQLITE_BUSY (a deferred transaction that has
// read cannot wait for the write lock). Run retries the loser on a fresh
// transaction: no increment is lost, and each Run's OnCommit callback runs
// once.
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
				errs[g] = r.Run(ctx, func(ctx context.Context, tx *txnent.Tx) error {
					attempts.Add(1)
					c := s.client.BindDriver(tx)
					n, err := readInt(ctx, tx, s.q(s.readForConflict), 1)
					if err != nil {
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
					return c.Account.UpdateOneID(1).SetBalance(n + 1).Exec(ctx)
				})
			}()
		}
		wg.Wait()
		require.NoError(t, errs[0])
		require.NoError(t, errs[1])
		assert.Equal(t, int64(2), balance(t, s, 1), "no increment lost")
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
// permanent error is rolled back to its savepoint (raw SAVEPOINT statements
// on ent's transaction), with its OnCommit callbacks; the outer transaction
// goes on and commits the rest, and each kept callback runs once. The
// nested Runs use WithClient.
func TestNestedRunRollsBackToSavepoint(t *testing.T) {
	forEach(t, func(t *testing.T, s *server) {
		ctx := ctxT(t)
		r := s.runner()
		errRefused := errors.New("inner refused")
		var outer, kept, undone atomic.Int32
		err := r.Run(ctx, txnent.WithClient(s.client.BindDriver, func(ctx context.Context, c *ent.Client) error {
			if err := addNote(ctx, c, "outer"); err != nil {
				return err
			}
			require.NoError(t, txn.OnCommit(ctx, func() { outer.Add(1) }))
			err := r.Run(ctx, txnent.WithClient(s.client.BindDriver, func(ctx context.Context, c *ent.Client) error {
				if err := addNote(ctx, c, "inner-undone"); err != nil {
					return err
				}
				if err := c.Account.UpdateOneID(1).AddBalance(1000).Exec(ctx); err != nil {
					return err
				}
				require.NoError(t, txn.OnCommit(ctx, func() { undone.Add(1) }))
				return errRefused
			}))
			require.ErrorIs(t, err, errRefused)
			return r.Run(ctx, txnent.WithClient(s.client.BindDriver, func(ctx context.Context, c *ent.Client) error {
				require.NoError(t, txn.OnCommit(ctx, func() { kept.Add(1) }))
				return addNote(ctx, c, "inner-kept")
			}))
		}))
		require.NoError(t, err)
		assert.Equal(t, []string{"outer", "inner-kept"}, notes(t, s))
		assert.Equal(t, int64(0), balance(t, s, 1), "the undone savepoint's update is gone")
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
//   - MariaDB: tx locks row 1, a heavier transaction (it updated the 200
//     filler rows) locks row 2 and waits for row 1, tx asks for row 2:
//     InnoDB breaks the deadlock by rolling back the lighter transaction,
//     tx, with 1213. The other transaction then adds its 100 and commits.
//
// Either way the other side adds 100 to account 1.
func provoke(ctx context.Context, t *testing.T, s *server, tx *txnent.Tx) error {
	c := s.client.BindDriver(tx)
	if !s.is("mariadb") {
		_, err := s.other.ExecContext(ctx, "UPDATE txnent_accounts SET balance = balance + 100 WHERE id = 1")
		require.NoError(t, err)
		return c.Account.UpdateOneID(1).AddBalance(1).Exec(ctx)
	}
	_, err := readInt(ctx, tx, "SELECT balance FROM txnent_accounts WHERE id = 1 FOR UPDATE")
	require.NoError(t, err)
	otx, err := s.other.BeginTx(ctx, nil)
	require.NoError(t, err)
	_, err = otx.ExecContext(ctx, "UPDATE txnent_accounts SET balance = balance + 1 WHERE id > 2")
	require.NoError(t, err)
	_, err = otx.ExecContext(ctx, "SELECT balance FROM txnent_accounts WHERE id = 2 FOR UPDATE")
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() {
		_, err := otx.ExecContext(ctx, "UPDATE txnent_accounts SET balance = balance + 100 WHERE id = 1")
		if err != nil {
			_ = otx.Rollback()
			done <- err
			return
		}
		done <- otx.Commit()
	}()
	err = c.Account.Update().Where(account.ID(2)).AddBalance(1).Exec(ctx)
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
	err := r.Run(ctx, func(ctx context.Context, tx *txnent.Tx) error {
		attempts++
		a := attempts
		c := s.client.BindDriver(tx)
		// The first read takes the snapshot (PostgreSQL, SQLite).
		if _, err := c.Account.Get(ctx, 1); err != nil {
			return err
		}
		if !s.is("sqlite") { // a write would take SQLite's write lock
			if err := addNote(ctx, c, fmt.Sprintf("%d:before", a)); err != nil {
				return err
			}
		}
		if err := txn.OnCommit(ctx, func() { callbacks++ }); err != nil {
			return err
		}
		err := r.Run(ctx, func(ctx context.Context, tx *txnent.Tx) error {
			if a == 1 {
				return provoke(ctx, t, s, tx)
			}
			return s.client.BindDriver(tx).Account.UpdateOneID(1).AddBalance(1).Exec(ctx)
		})
		if a == 1 {
			first = err
		}
		if err != nil && !swallow {
			return err
		}
		if err := addNote(ctx, c, fmt.Sprintf("%d:after", a)); err != nil && a > 1 {
			return err
		}
		return nil
	})
	require.NoError(t, err)
	require.Error(t, first, "the nested Run met a conflict")
	assert.Equal(t, txn.ClassRetryable, s.classify(first), "%v", first)
	assert.Equal(t, 2, attempts)
	assert.Equal(t, 1, callbacks)
	assert.Equal(t, int64(101), balance(t, s, 1), "the other side's 100 and one increment of ours")
	want := []string{"2:before", "2:after"}
	if s.is("sqlite") {
		want = want[1:]
	}
	assert.Equal(t, want, notes(t, s), "nothing of the failed attempt committed")
}

// TestPanicRollsBack: a panic in fn rolls the transaction back, releases
// its connection, is not retried, and reaches the caller unchanged.
func TestPanicRollsBack(t *testing.T) {
	forEach(t, func(t *testing.T, s *server) {
		ctx := ctxT(t)
		r := s.runner()
		var attempts, callbacks int
		require.PanicsWithValue(t, "boom", func() {
			_ = r.Run(ctx, func(ctx context.Context, tx *txnent.Tx) error {
				attempts++
				require.NoError(t, addNote(ctx, s.client.BindDriver(tx), "panicked"))
				require.NoError(t, txn.OnCommit(ctx, func() { callbacks++ }))
				panic("boom")
			})
		})
		assert.Equal(t, 1, attempts)
		assert.Equal(t, 0, callbacks)
		assert.Empty(t, notes(t, s))
		assert.Equal(t, 0, s.drv.DB().Stats().InUse, "the connection went back to the pool")
		require.NoError(t, r.Run(ctx, func(ctx context.Context, tx *txnent.Tx) error {
			return addNote(ctx, s.client.BindDriver(tx), "after")
		}))
		assert.Equal(t, []string{"after"}, notes(t, s))
	})
}

// TestBankWorkload runs 16 goroutines moving money between 5 accounts in
// random order through the generated client (deadlocks on MariaDB,
// serialization failures and deadlocks on PostgreSQL under REPEATABLE READ,
// lock waits on SQLite), each transfer writing a Transfer ledger row, and
// checks that every Run returned nil, that money was neither made nor lost,
// that no balance went negative, and that each balance equals what the
// ledger says (one row per committed transfer).
func TestBankWorkload(t *testing.T) {
	const (
		workers   = 16
		transfers = 20
		accounts  = 5
		initial   = 1000
	)
	forEach(t, func(t *testing.T, s *server) {
		ctx := ctxT(t)
		bulk := make([]*ent.AccountCreate, accounts)
		for i := range bulk {
			bulk[i] = s.client.Account.Create().SetBalance(initial)
		}
		created, err := s.client.Account.CreateBulk(bulk...).Save(ctx)
		require.NoError(t, err)
		ids := make([]int, accounts)
		for i, a := range created {
			ids[i] = a.ID
		}
		rec := &retries{}
		opts := []txn.RunnerOption{txn.MaxAttempts(100), txn.WithObserver(rec)}
		r := s.runner(opts...)
		if s.is("postgres") {
			r = r.WithBegin(s.conflictOpts...)
		}
		lock := ""
		if !s.is("sqlite") {
			lock = " FOR UPDATE"
		}
		var committed, applied atomic.Int64
		var wg sync.WaitGroup
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rnd := rand.New(rand.NewPCG(uint64(w), 1))
				for range transfers {
					i := rnd.IntN(accounts)
					from, to := ids[i], ids[(i+1+rnd.IntN(accounts-1))%accounts]
					amount := rnd.Int64N(50) + 1
					did := false
					err := r.Run(ctx, txnent.WithClient(s.client.BindDriver, func(ctx context.Context, c *ent.Client) error {
						did = false
						tx := txnentTx(ctx)
						bal, err := readInt(ctx, tx, s.q("SELECT balance FROM txnent_accounts WHERE id = ?"+lock), from)
						if err != nil {
							return err
						}
						if bal < amount {
							return nil
						}
						if err := c.Account.UpdateOneID(from).AddBalance(-amount).Exec(ctx); err != nil {
							return err
						}
						if err := c.Account.UpdateOneID(to).AddBalance(amount).Exec(ctx); err != nil {
							return err
						}
						if err := c.Transfer.Create().SetSrc(from).SetDst(to).SetAmount(amount).Exec(ctx); err != nil {
							return err
						}
						did = true
						return nil
					}))
					if !assert.NoError(t, err) {
						return
					}
					committed.Add(1)
					if did {
						applied.Add(1)
					}
				}
			}()
		}
		wg.Wait()
		assert.Equal(t, int64(workers*transfers), committed.Load())
		got, err := s.client.Account.Query().Where(account.IDIn(ids...)).All(ctx)
		require.NoError(t, err)
		var sum int64
		for _, a := range got {
			assert.GreaterOrEqual(t, a.Balance, int64(0), "account %d", a.ID)
			sum += a.Balance
		}
		assert.Equal(t, int64(accounts*initial), sum, "money is neither made nor lost")
		// Every committed transfer left exactly one ledger row, and the
		// ledger explains every balance: no attempt committed twice or
		// half.
		entries, err := s.client.Transfer.Query().All(ctx)
		require.NoError(t, err)
		assert.Len(t, entries, int(applied.Load()), "one ledger row per committed transfer")
		want := map[int]int64{}
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
		t.Logf("%s: %d transfers, %d retries", s.name, committed.Load(), len(rec.all()))
	})
}

// txnentTx returns the transaction carried by ctx inside a Run.
func txnentTx(ctx context.Context) *txnent.Tx {
	tx, ok := txn.TxFrom[*txnent.Tx](ctx)
	if !ok {
		panic("no txnent transaction in ctx")
	}
	return tx
}

// TestBuildersJoin: ent's builders open "a transaction" of their own for
// multi-statement operations and the generated client's Tx does too; on a
// bound client both join the Run's transaction, so a failure after them
// undoes their work with the rest.
func TestBuildersJoin(t *testing.T) {
	forEach(t, func(t *testing.T, s *server) {
		ctx := ctxT(t)
		r := s.runner()
		errLater := errors.New("later failure")
		err := r.Run(ctx, txnent.WithClient(s.client.BindDriver, func(ctx context.Context, c *ent.Client) error {
			etx, err := c.Tx(ctx)
			require.NoError(t, err)
			require.NoError(t, etx.Note.Create().SetText("via ent Tx").Exec(ctx))
			require.NoError(t, etx.Commit(), "joined: the commit is Run's")
			require.NoError(t, c.Note.CreateBulk(c.Note.Create().SetText("a"), c.Note.Create().SetText("b")).Exec(ctx))
			return errLater
		}))
		require.ErrorIs(t, err, errLater)
		assert.Empty(t, notes(t, s))
	})
}

// TestBoundClientKeepsHooks: BindDriver copies the client's configuration,
// so a hook registered with client.Use sees the bound client's mutations.
func TestBoundClientKeepsHooks(t *testing.T) {
	forEach(t, func(t *testing.T, s *server) {
		ctx := ctxT(t)
		var seen atomic.Int32
		s.client.Use(func(next ent.Mutator) ent.Mutator {
			return ent.MutateFunc(func(ctx context.Context, m ent.Mutation) (ent.Value, error) {
				seen.Add(1)
				return next.Mutate(ctx, m)
			})
		})
		r := s.runner()
		require.NoError(t, r.Run(ctx, txnent.WithClient(s.client.BindDriver, func(ctx context.Context, c *ent.Client) error {
			return addNote(ctx, c, "hooked")
		})))
		assert.Equal(t, int32(1), seen.Load())
		assert.Equal(t, []string{"hooked"}, notes(t, s))
	})
}

// TestOptionsAndNil covers the adapter's own input checks.
func TestOptionsAndNil(t *testing.T) {
	ctx := context.Background()
	fn := func(context.Context, *txnent.Tx) error { return nil }
	require.ErrorIs(t, txnent.New(nil).Run(ctx, fn), txn.ErrNilRunner)
	require.ErrorIs(t, txnent.New(nil).Run(ctx, fn), txn.ErrNilRunner)
	forEach(t, func(t *testing.T, s *server) {
		require.NoError(t, txnent.New(s.drv).Run(ctx, fn))
		r := s.runner()
		require.ErrorIs(t, r.WithBegin(txn.NewBeginOption[*txnent.Tx]("other", 42)).Run(ctx, fn), txn.ErrBadOption)
		ro := sql.TxOptions{ReadOnly: true}
		require.NoError(t, r.WithBegin(txnent.TxOptions(ro)).Run(ctx, fn))
		require.NoError(t, r.Run(ctx, func(ctx context.Context, tx *txnent.Tx) error {
			assert.Equal(t, s.drv.Dialect(), tx.Dialect())
			return tx.Close()
		}))
	})
}

// TestClassify covers the connection rule under every classifier.
func TestClassify(t *testing.T) {
	assert.Equal(t, txn.ClassPermanent, txnent.Classify(nil))
	assert.Equal(t, txn.ClassPermanent, txnent.Classify(errors.New("x")))
	assert.Equal(t, txn.ClassConnLost, txnent.Classify(fmt.Errorf("w: %w", driver.ErrBadConn)))
}
