package integrationtest

import (
	"context"
	"errors"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/txnkit/txn"
)

// BankOutcome is how one transfer of RunKeyBank ended.
type BankOutcome struct {
	TID int64
	Err error
	// Unknown is set when Err matches txn.ErrCommitUnknown.
	Unknown bool
}

// KeyBankTables creates the accounts 1..accounts of db with initial each,
// and the ledger, for RunKeyBank; both are dropped when t ends.
func KeyBankTables[T any](t *testing.T, db DB[T], accounts, initial int) (tbl, ledger string) {
	t.Helper()
	tbl = CreateTable(t, db, "bank", "id INT PRIMARY KEY, balance INT NOT NULL")
	for a := 1; a <= accounts; a++ {
		require.NoError(t, db.Exec(context.Background(), "INSERT INTO "+tbl+" (id, balance) VALUES (?, ?)", a, initial))
	}
	ledger = CreateTable(t, db, "ledger", "tid BIGINT NOT NULL, src INT NOT NULL, dst INT NOT NULL, amt INT NOT NULL")
	return tbl, ledger
}

// RunKeyBank runs transfers between accounts 1..accounts of tbl from
// perRunner goroutines of every Runner, each making each transfers: a
// read-modify-write of two balances (plain SELECTs, then UPDATEs that write
// what was read, in the order the transfer names them, which no row lock
// protects under READ COMMITTED) and a ledger row, under the keys of the
// two accounts in that order, with no attempt limit. db runs the
// statements on fn's handle. It returns every Run's outcome.
func RunKeyBank[T any](t *testing.T, ctx context.Context, db DB[T], runners []*txn.Runner[T], tbl, ledger string, accounts, perRunner, each int) []BankOutcome {
	t.Helper()
	var mu sync.Mutex
	var out []BankOutcome
	var wg sync.WaitGroup
	var tids atomic.Int64
	for ri, r := range runners {
		for g := range perRunner {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rng := rand.New(rand.NewPCG(uint64(ri), uint64(g)))
				for range each {
					from := 1 + rng.IntN(accounts)
					to := 1 + (from+rng.IntN(accounts-1))%accounts
					amt := 1 + rng.IntN(9)
					tid := tids.Add(1)
					err := r.Run(ctx, func(ctx context.Context, tx T) error {
						bf, err := db.TxInt(ctx, tx, "SELECT balance FROM "+tbl+" WHERE id = ?", from)
						if err != nil {
							return err
						}
						bt, err := db.TxInt(ctx, tx, "SELECT balance FROM "+tbl+" WHERE id = ?", to)
						if err != nil {
							return err
						}
						if err := db.TxExec(ctx, tx, "UPDATE "+tbl+" SET balance = ? WHERE id = ?", bf-amt, from); err != nil {
							return err
						}
						if err := db.TxExec(ctx, tx, "UPDATE "+tbl+" SET balance = ? WHERE id = ?", bt+amt, to); err != nil {
							return err
						}
						return db.TxExec(ctx, tx, "INSERT INTO "+ledger+" (tid, src, dst, amt) VALUES (?, ?, ?, ?)", tid, from, to, amt)
					}, txn.Keys(strconv.Itoa(from), strconv.Itoa(to)), txn.MaxAttempts(0))
					mu.Lock()
					out = append(out, BankOutcome{TID: tid, Err: err, Unknown: errors.Is(err, txn.ErrCommitUnknown)})
					mu.Unlock()
				}
			}()
		}
	}
	wg.Wait()
	return out
}

// CheckKeyBank checks the ledger against the outcomes (a Run that returned
// nil wrote its row once, one that failed definitely wrote none, one of
// unknown outcome at most one) and every balance against the ledger (no
// lost update).
func CheckKeyBank[T any](t *testing.T, db DB[T], tbl, ledger string, accounts, initial int, out []BankOutcome) {
	t.Helper()
	ctx := context.Background()
	tids, err := db.Ints(ctx, "SELECT tid FROM "+ledger)
	require.NoError(t, err)
	written := map[int64]int{}
	for _, tid := range tids {
		written[int64(tid)]++
	}
	var failed, unknown int
	for _, o := range out {
		switch {
		case o.Err == nil:
			assert.Equal(t, 1, written[o.TID], "transfer %d committed, its ledger rows", o.TID)
		case o.Unknown:
			unknown++
			assert.LessOrEqual(t, written[o.TID], 1, "transfer %d of unknown outcome, its ledger rows", o.TID)
		default:
			failed++
			assert.Zero(t, written[o.TID], "transfer %d failed (%v), its ledger rows", o.TID, o.Err)
		}
	}
	t.Logf("%d transfers: %d failed, %d of unknown outcome", len(out), failed, unknown)
	for a := 1; a <= accounts; a++ {
		in, err := db.Ints(ctx, "SELECT amt FROM "+ledger+" WHERE dst = ?", a)
		require.NoError(t, err)
		outs, err := db.Ints(ctx, "SELECT amt FROM "+ledger+" WHERE src = ?", a)
		require.NoError(t, err)
		want := initial
		for _, v := range in {
			want += v
		}
		for _, v := range outs {
			want -= v
		}
		got := oneInt(t, ctx, db, "SELECT balance FROM "+tbl+" WHERE id = ?", a)
		assert.Equal(t, want, got, "account %d: lost update", a)
	}
}

// KeySetRows returns the rows RunKeySets increments.
func KeySetRows() []string { return []string{"a", "b", "c"} }

// RunKeySets creates a table of the counters KeySetRows and has four
// goroutines of every Runner each make ten Runs through key sets of two or
// three keys named in every order ({a,b} and {b,a}, {a,b,c} and {c,a},
// ...), each read-modify-writing its rows in the order named, under
// txn.Keys of its set. Every Run must succeed; it returns the table and
// the number of increments committed per row of KeySetRows(), which a lost
// update makes larger than the row's value.
func RunKeySets[T any](t *testing.T, ctx context.Context, db DB[T], runners []*txn.Runner[T]) (tbl string, want []int) {
	t.Helper()
	tbl = CreateTable(t, db, "keysets", "id VARCHAR(8) PRIMARY KEY, v INT NOT NULL")
	for _, k := range KeySetRows() {
		require.NoError(t, db.Exec(context.Background(), "INSERT INTO "+tbl+" (id, v) VALUES (?, 0)", k))
	}
	sets := [][]string{{"a", "b"}, {"b", "a"}, {"a", "b", "c"}, {"c", "a"}, {"c", "b", "a"}, {"b", "c"}, {"a", "c", "b"}}
	var counts [3]atomic.Int32
	var wg sync.WaitGroup
	for ri, r := range runners {
		for g := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range 10 {
					set := sets[(ri*7+g*3+i)%len(sets)]
					err := r.Run(ctx, func(ctx context.Context, tx T) error {
						for _, k := range set {
							v, err := db.TxInt(ctx, tx, "SELECT v FROM "+tbl+" WHERE id = ?", k)
							if err != nil {
								return err
							}
							if err := db.TxExec(ctx, tx, "UPDATE "+tbl+" SET v = ? WHERE id = ?", v+1, k); err != nil {
								return err
							}
						}
						return nil
					}, txn.Keys(set...))
					if assert.NoError(t, err) {
						for _, k := range set {
							counts[k[0]-'a'].Add(1)
						}
					}
				}
			}()
		}
	}
	wg.Wait()
	for i := range counts {
		want = append(want, int(counts[i].Load()))
	}
	return tbl, want
}
