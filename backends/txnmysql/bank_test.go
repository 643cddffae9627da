package txnmysql_test

import (
	"context"
	"database/sql"
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/txnkit/txn"
	"github.com/txnkit/txn/backends/txnmysql"
)

var errInsufficient = errors.New("insufficient funds")

// TestBankTransferRandomLockOrder runs 16 goroutines moving money between 4
// accounts, 40 transfers each. Each transfer locks its two accounts in a
// random order, so transfers deadlock and Run retries them. At the end the
// total is unchanged, every account's balance is what the ledger says, and
// the ledger has exactly one row per successful Run.
func TestBankTransferRandomLockOrder(t *testing.T) {
	const (
		accounts  = 4
		workers   = 16
		initial   = 1000
		perWorker = 40
	)
	db := openDB(t, nil)
	db.SetMaxOpenConns(workers + 2)
	ctx := testCtx(t)
	acct := createTable(t, db, "id INT PRIMARY KEY, balance INT NOT NULL")
	ledger := createTable(t, db, "seq BIGINT AUTO_INCREMENT PRIMARY KEY, src INT NOT NULL, dst INT NOT NULL, amount INT NOT NULL")
	for id := 1; id <= accounts; id++ {
		_, err := db.ExecContext(ctx, "INSERT INTO "+acct+" VALUES (?, ?)", id, initial)
		require.NoError(t, err)
	}

	rec := &retryRecorder{}
	r := txnmysql.New(db, txn.WithObserver(rec), txn.MaxAttempts(100))

	var ok, refused, exhausted atomic.Int64
	var mu sync.Mutex
	var unexpected []error
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(seed uint64) {
			defer wg.Done()
			rnd := rand.New(rand.NewPCG(seed, seed*7919+1))
			for range perWorker {
				from := rnd.IntN(accounts) + 1
				to := rnd.IntN(accounts-1) + 1
				if to >= from {
					to++
				}
				amount := rnd.IntN(100) + 1
				err := r.Run(ctx, func(ctx context.Context, tx *sql.Tx) error {
					return transfer(ctx, tx, acct, ledger, from, to, amount, rnd.IntN(2) == 0)
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
		}(uint64(w + 1))
	}
	wg.Wait()
	require.Empty(t, unexpected)

	var total int
	require.NoError(t, db.QueryRowContext(ctx, "SELECT SUM(balance) FROM "+acct).Scan(&total))
	assert.Equal(t, accounts*initial, total, "money is conserved")
	assert.Equal(t, int(ok.Load()), count(t, db, ledger, ""), "one ledger row per successful Run")
	// Every balance is the initial one plus what the ledger moved.
	assert.Equal(t, 0, count(t, db, acct+" a",
		"a.balance <> ? + (SELECT COALESCE(SUM(amount), 0) FROM "+ledger+" WHERE dst = a.id) - (SELECT COALESCE(SUM(amount), 0) FROM "+ledger+" WHERE src = a.id)",
		initial))
	assert.Equal(t, 0, count(t, db, acct, "balance < 0"))

	deadlocks := rec.retriesWith(1213)
	rec.mu.Lock()
	attempts, commits, retries := rec.attempts, rec.commits, len(rec.retries)
	rec.mu.Unlock()
	t.Logf("%d transfers committed, %d refused (insufficient funds), %d gave up after 100 attempts; %d attempts, %d retries, %d of them deadlocks (1213), %d lock wait timeouts (1205)",
		ok.Load(), refused.Load(), exhausted.Load(), attempts, retries, deadlocks, rec.retriesWith(1205))
	assert.Equal(t, int(ok.Load()), commits)
	assert.Positive(t, ok.Load())
	assert.Positive(t, deadlocks, "locking in random order made transfers deadlock")
}

// transfer moves amount from one account to another and records it in the
// ledger, locking the two accounts in the order fromFirst says.
func transfer(ctx context.Context, tx *sql.Tx, acct, ledger string, from, to, amount int, fromFirst bool) error {
	order := [2]int{to, from}
	if fromFirst {
		order = [2]int{from, to}
	}
	balance := map[int]int{}
	for _, id := range order {
		var b int
		if err := tx.QueryRowContext(ctx, "SELECT balance FROM "+acct+" WHERE id = ? FOR UPDATE", id).Scan(&b); err != nil {
			return err
		}
		balance[id] = b
	}
	if balance[from] < amount {
		return errInsufficient
	}
	if _, err := tx.ExecContext(ctx, "UPDATE "+acct+" SET balance = balance - ? WHERE id = ?", amount, from); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, "UPDATE "+acct+" SET balance = balance + ? WHERE id = ?", amount, to); err != nil {
		return err
	}
	_, err := tx.ExecContext(ctx, "INSERT INTO "+ledger+" (src, dst, amount) VALUES (?, ?, ?)", from, to, amount)
	return err
}
