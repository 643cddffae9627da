package txntest_test

import (
	"context"
	"errors"
	"maps"
	"slices"
	"strings"
	"sync"

	"github.com/txnkit/txn"
)

// memDB is a tiny in-memory database that stands in for PostgreSQL, MySQL
// or SQLite in the examples: a transaction (Tx) reads the committed rows
// and its own writes, Commit applies its writes, and Rollback drops them.
type memDB struct {
	mu   sync.Mutex
	rows map[string]int
}

func newMemDB() *memDB { return &memDB{rows: map[string]int{}} }

// Put writes a row outside any transaction.
func (d *memDB) Put(key string, v int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.rows[key] = v
}

// Get reads a committed row outside any transaction.
func (d *memDB) Get(key string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.rows[key]
}

// Clear deletes every row.
func (d *memDB) Clear() {
	d.mu.Lock()
	defer d.mu.Unlock()
	clear(d.rows)
}

// Tx is a transaction of a memDB.
type Tx struct {
	db     *memDB
	writes map[string]int
}

// Get reads key as the transaction sees it.
func (tx *Tx) Get(key string) int {
	if v, ok := tx.writes[key]; ok {
		return v
	}
	return tx.db.Get(key)
}

// Put writes key in the transaction.
func (tx *Tx) Put(key string, v int) { tx.writes[key] = v }

// Keys returns the keys that start with prefix, sorted.
func (tx *Tx) Keys(prefix string) []string {
	tx.db.mu.Lock()
	all := maps.Clone(tx.db.rows)
	tx.db.mu.Unlock()
	maps.Copy(all, tx.writes)
	var out []string
	for k := range all {
		if strings.HasPrefix(k, prefix) {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

var errDone = errors.New("memdb: transaction already finished")

func (d *memDB) Begin(context.Context, []txn.BeginOption[*Tx]) (*Tx, error) {
	return &Tx{db: d, writes: map[string]int{}}, nil
}

func (d *memDB) Commit(_ context.Context, tx *Tx) error {
	if tx.writes == nil {
		return errDone
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	maps.Copy(d.rows, tx.writes)
	tx.writes = nil
	return nil
}

func (d *memDB) Rollback(_ context.Context, tx *Tx) error {
	if tx.writes == nil {
		return errDone
	}
	tx.writes = nil
	return nil
}

func (d *memDB) Classify(error) txn.Class { return txn.ClassPermanent }
