package txngorm_test

import (
	"context"
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
	"gorm.io/gorm"
)

var errInsufficient = errors.New("insufficient funds")

// account is a row of the bank test's accounts table.
type account struct {
	ID      int
	Balance int
}

// ledgerEntry is a row of the bank test's ledger.
type ledgerEntry struct {
	ID     string
	Src    int
	Dst    int
	Amount int
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
		db := d.open(t, gormConfig())
		ctx := testCtx(t)
		acct := createTable(t, db, "id INT PRIMARY KEY, balance INT NOT NULL")
		ledger := createTable(t, db, "id VARCHAR(64) PRIMARY KEY, src INT NOT NULL, dst INT NOT NULL, amount INT NOT NULL")
		for id := 1; id <= accounts; id++ {
			require.NoError(t, db.Table(acct).Create(&account{ID: id, Balance: initial}).Error)
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
					err := r.Run(ctx, func(ctx context.Context, tx *gorm.DB) error {
						return transfer(tx, d, acct, ledger, ledgerEntry{ID: id, Src: from, Dst: to, Amount: amount}, rnd.IntN(2) == 0)
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
		require.NoError(t, db.Table(acct).Select("SUM(balance)").Scan(&total).Error)
		assert.Equal(t, accounts*initial, total, "money is conserved")
		var entries []ledgerEntry
		require.NoError(t, db.Table(ledger).Find(&entries).Error)
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
		require.NoError(t, db.Table(acct).Order("id").Find(&got).Error)
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
func transfer(tx *gorm.DB, d dialect, acct, ledger string, e ledgerEntry, srcFirst bool) error {
	order := [2]int{e.Dst, e.Src}
	if srcFirst {
		order = [2]int{e.Src, e.Dst}
	}
	balance := map[int]int{}
	for _, id := range order {
		var a account
		if err := tx.Raw("SELECT id, balance FROM "+acct+" WHERE id = ?"+d.forUpdate, id).Scan(&a).Error; err != nil {
			return err
		}
		balance[id] = a.Balance
	}
	if balance[e.Src] < e.Amount {
		return errInsufficient
	}
	if err := tx.Table(acct).Where("id = ?", e.Src).Update("balance", gorm.Expr("balance - ?", e.Amount)).Error; err != nil {
		return err
	}
	if err := tx.Table(acct).Where("id = ?", e.Dst).Update("balance", gorm.Expr("balance + ?", e.Amount)).Error; err != nil {
		return err
	}
	return tx.Table(ledger).Create(&e).Error
}
