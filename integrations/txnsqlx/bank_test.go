package txnsqlx_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/txnkit/txn"
)

var errInsufficient = errors.New("insufficient funds")

// account is a row of the bank test's accounts table.
type account struct {
	ID      int `db:"id"`
	Balance int `db:"balance"`
}

// ledgerEntry is a row of the bank test's ledger.
type ledgerEntry struct {
	ID     string `db:"id"`
	Src    int    `db:"src"`
	Dst    int    `db:"dst"`
	Amount int    `db:"amount"`
}

// TestBankWorkload runs 16 goroutines moving money between 4 accounts for
// 1.5 s through one Runner. Each transfer reads its two accounts in a
// random order (locking them on PostgreSQL and MariaDB), so transfers
// deadlock or, on SQLite, find the database busy, and Run retries them. At
// the end the total is unchanged, every balance is the initial one plus
// what the ledger moved, and the ledger has one row per successful Run.
func TestBankWorkload(t *testing.T) {
	const (
		accounts = 4
		workers  = 16
		initial  = 1000
		duration = 1500 * time.Millisecond
	)
	forEach(t, dialects, func(t *testing.T, d dialect) {
		db := d.open(t)
		ctx := testCtx(t)
		acct := createTable(t, db, "id INT PRIMARY KEY, balance INT NOT NULL")
		ledger := createTable(t, db, "id VARCHAR(64) PRIMARY KEY, src INT NOT NULL, dst INT NOT NULL, amount INT NOT NULL")
		for id := 1; id <= accounts; id++ {
			_, err := db.NamedExec("INSERT INTO "+acct+" (id, balance) VALUES (:id, :balance)", account{ID: id, Balance: initial})
			require.NoError(t, err)
		}

		rec := &recorder{}
		r := d.runner(db, txn.WithObserver(rec), txn.MaxAttempts(50))
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
					from := rnd.IntN(accounts) + 1
					to := rnd.IntN(accounts-1) + 1
					if to >= from {
						to++
					}
					amount := rnd.IntN(100) + 1
					id := fmt.Sprintf("%d-%d", w, seq)
					err := r.Run(ctx, func(ctx context.Context, tx *sqlx.Tx) error {
						return transfer(ctx, tx, d, acct, ledger, ledgerEntry{ID: id, Src: from, Dst: to, Amount: amount}, rnd.IntN(2) == 0)
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

		var total int
		require.NoError(t, db.Get(&total, "SELECT SUM(balance) FROM "+acct))
		assert.Equal(t, accounts*initial, total, "money is conserved")
		var entries []ledgerEntry
		require.NoError(t, db.Select(&entries, "SELECT id, src, dst, amount FROM "+ledger))
		assert.Len(t, entries, int(ok.Load()), "one ledger row per successful Run")
		want := map[int]int{}
		for id := 1; id <= accounts; id++ {
			want[id] = initial
		}
		for _, e := range entries {
			want[e.Src] -= e.Amount
			want[e.Dst] += e.Amount
		}
		var got []account
		require.NoError(t, db.Select(&got, "SELECT id, balance FROM "+acct+" ORDER BY id"))
		for _, a := range got {
			assert.Equal(t, want[a.ID], a.Balance, "account %d matches the ledger", a.ID)
			assert.GreaterOrEqual(t, a.Balance, 0)
		}
		retries, commits := rec.snapshot()
		conflicts := 0
		for _, e := range retries {
			if d.conflict(e.Err) {
				conflicts++
			}
		}
		t.Logf("%s: %d transfers committed, %d refused, %d gave up after 50 attempts; %d retries, %d of them on the driver's conflict error",
			d.name, ok.Load(), refused.Load(), exhausted.Load(), len(retries), conflicts)
		assert.Equal(t, int(ok.Load()), commits)
		assert.Positive(t, ok.Load())
		assert.Positive(t, conflicts, "transfers conflicted and were retried")
	})
}

// transfer moves e.Amount from e.Src to e.Dst and records e in the ledger,
// reading the two accounts in the order srcFirst says.
func transfer(ctx context.Context, tx *sqlx.Tx, d dialect, acct, ledger string, e ledgerEntry, srcFirst bool) error {
	order := [2]int{e.Dst, e.Src}
	if srcFirst {
		order = [2]int{e.Src, e.Dst}
	}
	balance := map[int]int{}
	for _, id := range order {
		var a account
		if err := tx.GetContext(ctx, &a, tx.Rebind("SELECT id, balance FROM "+acct+" WHERE id = ?"+d.forUpdate), id); err != nil {
			return err
		}
		balance[id] = a.Balance
	}
	if balance[e.Src] < e.Amount {
		return errInsufficient
	}
	if _, err := tx.ExecContext(ctx, tx.Rebind("UPDATE "+acct+" SET balance = balance - ? WHERE id = ?"), e.Amount, e.Src); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, tx.Rebind("UPDATE "+acct+" SET balance = balance + ? WHERE id = ?"), e.Amount, e.Dst); err != nil {
		return err
	}
	_, err := tx.NamedExecContext(ctx, "INSERT INTO "+ledger+" (id, src, dst, amount) VALUES (:id, :src, :dst, :amount)", e)
	return err
}
