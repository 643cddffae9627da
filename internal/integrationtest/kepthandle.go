package integrationtest

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/txnkit/txn"
)

// errKept is the permanent error of the Runs whose fn fails after keeping
// its handles.
var errKept = errors.New("fn fails after keeping its handles")

// keptHandles is what one fn kept past its Run: the transaction handle and
// the context it received, and the handle and context of a txn.Savepoint
// it opened.
type keptHandles[T any] struct {
	tx, sp     T
	ctx, spCtx context.Context
	haveSp     bool
}

// KeptHandles checks that the handles fn keeps past its Run never reach
// the database again: fn of a Run of r (called with opts) inserts row 1
// with its transaction handle and row 2 in a txn.Savepoint, keeps both
// handles and both contexts, and then returns nil (the Run commits) or a
// permanent error (the Run rolls back). After the Run, every kept handle's
// INSERT and SELECT must fail, and the kept contexts must carry no
// transaction (txn.TxFrom, txn.Savepoint and txn.OnCommit refuse them).
// Then a second Run of r, on the same connection, tries the same inside
// its fn before inserting row 100 itself, and commits: a kept handle whose
// statement landed in that transaction would commit with it. The table
// must hold exactly the rows of the committed Runs (1, 2 and 100, or 100
// alone), whatever the kept handles' calls returned.
//
// db's pool must hold a single connection, so that the second Run's
// transaction runs on the connection the first one used. A Runner without
// savepoints (txn.ErrSavepointUnsupported) is checked with its transaction
// handle and context alone.
func KeptHandles[T any](t *testing.T, db DB[T], prefix string, r *txn.Runner[T], opts ...txn.CallOption) {
	for _, commit := range []bool{true, false} {
		name := "Committed"
		if !commit {
			name = "RolledBack"
		}
		t.Run(name, func(t *testing.T) {
			ctx := Context(t)
			tbl := CreateTable(t, db, prefix, "id INT PRIMARY KEY")
			insert := func(ctx context.Context, tx T, id int) error {
				return db.TxExec(ctx, tx, fmt.Sprintf("INSERT INTO %s (id) VALUES (%d)", tbl, id))
			}
			var k keptHandles[T]
			err := r.Run(ctx, func(ctx context.Context, tx T) error {
				if err := insert(ctx, tx, 1); err != nil {
					return err
				}
				k = keptHandles[T]{tx: tx, ctx: ctx}
				err := txn.Savepoint(ctx, func(ctx context.Context, sp T) error {
					k.sp, k.spCtx, k.haveSp = sp, ctx, true
					return insert(ctx, sp, 2)
				})
				if err != nil && !errors.Is(err, txn.ErrSavepointUnsupported) {
					return err
				}
				if !commit {
					return errKept
				}
				return nil
			}, opts...)
			want := []int{1, 2, 100}
			if commit {
				require.NoError(t, err)
				if !k.haveSp {
					want = []int{1, 100}
				}
			} else {
				require.ErrorIs(t, err, errKept)
				want = []int{100}
			}

			// Outside any Run.
			k.check(t, ctx, db, tbl, 10, "after the Run")
			// Inside a later Run, on the same connection.
			err = r.Run(ctx, func(ctx context.Context, tx T) error {
				k.check(t, ctx, db, tbl, 20, "during a later Run")
				return insert(ctx, tx, 100)
			}, opts...)
			require.NoError(t, err, "the later Run")
			got, err := db.Ints(ctx, "SELECT id FROM "+tbl+" ORDER BY id")
			require.NoError(t, err)
			assert.Equal(t, want, got, "only the committed Runs' own rows: a kept handle wrote outside its Run")
		})
	}
}

// check uses every kept handle to insert a row (ids from base up) and to
// read the table, requiring that each call fails, and checks that the
// kept contexts carry no transaction. What the calls wrote is checked by
// the caller, from the table.
func (k *keptHandles[T]) check(t *testing.T, ctx context.Context, db DB[T], tbl string, base int, when string) {
	t.Helper()
	hctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	handles := []struct {
		name string
		h    T
	}{{"transaction", k.tx}}
	if k.haveSp {
		handles = append(handles, struct {
			name string
			h    T
		}{"savepoint", k.sp})
	}
	for i, h := range handles {
		err := db.TxExec(hctx, h.h, fmt.Sprintf("INSERT INTO %s (id) VALUES (%d)", tbl, base+i))
		assert.Error(t, err, "%s: INSERT on the kept %s handle", when, h.name)
		_, err = db.TxInt(hctx, h.h, "SELECT COUNT(*) FROM "+tbl)
		assert.Error(t, err, "%s: SELECT on the kept %s handle", when, h.name)
	}
	ctxs := map[string]context.Context{"fn's context": k.ctx}
	if k.haveSp {
		ctxs["the savepoint's context"] = k.spCtx
	}
	for name, c := range ctxs {
		_, ok := txn.TxFrom[T](c)
		assert.False(t, ok, "%s: TxFrom finds a transaction in %s", when, name)
		ran := false
		err := txn.Savepoint(c, func(ctx context.Context, sp T) error {
			ran = true
			return db.TxExec(ctx, sp, fmt.Sprintf("INSERT INTO %s (id) VALUES (%d)", tbl, base+9))
		})
		assert.ErrorIs(t, err, txn.ErrNoTransaction, "%s: Savepoint on %s", when, name)
		assert.False(t, ran, "%s: Savepoint ran its fn on %s", when, name)
		assert.ErrorIs(t, txn.OnCommit(c, func() {}), txn.ErrNoTransaction, "%s: OnCommit on %s", when, name)
	}
}
