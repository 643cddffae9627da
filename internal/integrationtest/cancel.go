package integrationtest

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/txnkit/txn"
)

// CancelStorm runs Runs of r (over db, whose pool holds one connection)
// whose contexts another goroutine cancels at moments spread over a whole
// Run: before BEGIN, during it, during fn's statements, between fn's
// return and COMMIT, during COMMIT, after it. Each Run writes a ledger row
// carrying its number and increments a counter. After each Run, idle
// (when not nil) checks that the pool's connection is outside any
// transaction; then a Run that is not cancelled must commit. At the end
// the ledger is reconciled with the Runs' results: every Run that returned
// nil wrote its row once, every Run whose error was definite (not
// txn.ErrCommitUnknown) wrote nothing, and the counter equals the number of
// rows (no lost or doubled update). It returns the results' counts, for
// the caller to log.
func CancelStorm[T any](t *testing.T, db DB[T], prefix string, r *txn.Runner[T], idle func(ctx context.Context) error, opts ...txn.CallOption) map[string]int {
	t.Helper()
	ctx := Context(t)
	ledger := CreateTable(t, db, prefix, "id INT PRIMARY KEY")
	counter := CreateTable(t, db, prefix, "id INT PRIMARY KEY, n INT NOT NULL")
	require.NoError(t, db.Exec(ctx, "INSERT INTO "+counter+" VALUES (1, 0)"))
	write := func(ctx context.Context, tx T, id int) error {
		if err := db.TxExec(ctx, tx, "INSERT INTO "+ledger+" VALUES (?)", id); err != nil {
			return err
		}
		n, err := db.TxInt(ctx, tx, "SELECT n FROM "+counter+" WHERE id = 1")
		if err != nil {
			return err
		}
		return db.TxExec(ctx, tx, "UPDATE "+counter+" SET n = ? WHERE id = 1", n+1)
	}

	// The length of an uncancelled Run on this machine, to spread the
	// cancellations over it.
	next := 0
	var typical time.Duration
	for i := 0; i < 10; i++ {
		next++
		id := next
		start := time.Now()
		require.NoError(t, r.Run(ctx, func(ctx context.Context, tx T) error { return write(ctx, tx, id) }, opts...))
		typical += time.Since(start)
	}
	typical /= 10
	committed := map[int]bool{}
	for id := 1; id <= next; id++ {
		committed[id] = true
	}
	unknown := map[int]bool{}
	definite := map[int]error{}
	counts := map[string]int{}

	const runs = 300
	for i := 0; i < runs; i++ {
		next++
		id := next
		// Cancellation moments from 0 to 1.5 typical Runs, in steps, with
		// every tenth Run cancelled from inside fn, just before it returns
		// (the cancellation is then always seen before COMMIT).
		delay := time.Duration(i%30) * typical / 20
		rctx, cancel := context.WithCancel(ctx)
		fromFn := i%10 == 9
		timer := time.AfterFunc(delay, func() {
			if !fromFn {
				cancel()
			}
		})
		err := r.Run(rctx, func(ctx context.Context, tx T) error {
			if err := write(ctx, tx, id); err != nil {
				return err
			}
			if fromFn {
				cancel()
			}
			return nil
		}, opts...)
		timer.Stop()
		cancel()
		switch {
		case err == nil:
			committed[id] = true
			counts["committed"]++
			assert.False(t, fromFn, "Run %d committed although its context was cancelled in fn", id)
		case errors.Is(err, txn.ErrCommitUnknown):
			unknown[id] = true
			counts["commit unknown"]++
			assert.False(t, fromFn, "Run %d sent COMMIT although its context was cancelled in fn: %v", id, err)
		default:
			definite[id] = err
			counts[errKind(err)]++
			assert.ErrorIs(t, err, context.Canceled, "Run %d", id)
		}
		ictx, icancel := context.WithTimeout(ctx, 10*time.Second)
		require.NoError(t, poolSettles(ictx, db), "after Run %d", id)
		if idle != nil {
			require.NoError(t, idle(ictx), "after Run %d (%v)", id, err)
		}
		icancel()
	}
	// The pool's one connection still works, in a clean state.
	next++
	final := next
	require.NoError(t, r.Run(ctx, func(ctx context.Context, tx T) error { return write(ctx, tx, final) }, opts...))
	committed[final] = true

	ids, err := db.Ints(ctx, "SELECT id FROM "+ledger)
	require.NoError(t, err)
	n := oneInt(t, ctx, db, "SELECT n FROM "+counter+" WHERE id = 1")
	assert.Equal(t, len(ids), n, "the counter counts the ledger rows: no lost or doubled increment")
	seen := map[int]bool{}
	for _, id := range ids {
		seen[id] = true
		if err, ok := definite[id]; ok {
			assert.Failf(t, "written but failed", "Run %d returned a definite error and its row is there: %v", id, err)
		}
	}
	for id := range committed {
		assert.True(t, seen[id], "Run %d committed and its row is missing", id)
	}
	return counts
}

// errKind names the kind of a Run's error for CancelStorm's counts.
func errKind(err error) string {
	var gu *txn.GiveUpError
	switch {
	case errors.As(err, &gu):
		return fmt.Sprintf("gave up (%v)", gu.Reason)
	case strings.Contains(err.Error(), "before commit"):
		return "rolled back before commit"
	}
	msg := err.Error()
	if i := strings.Index(msg, ": "); i >= 0 {
		if j := strings.Index(msg[i+2:], ": "); j >= 0 {
			msg = msg[:i+2+j]
		}
	}
	return msg
}

// FormatCounts formats CancelStorm's counts, in a stable order.
func FormatCounts(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "%s ×%d", k, m[k])
	}
	return b.String()
}

// cancelAt is an Interceptor that cancels the Run's context at one point
// and lets the attempt go on.
type cancelAt struct {
	at     txn.InterceptPoint
	cancel context.CancelFunc
}

func (c cancelAt) Intercept(_ context.Context, at txn.InterceptPoint, _ int) error {
	if at == c.at {
		c.cancel()
	}
	return nil
}

// CancelJustBeforeCommit cancels the Run's context at the last moment
// before COMMIT is sent, after Run's own check of the context (through an
// Interceptor at txn.InterceptCommit, which lets the attempt go on): the
// cancellation is there to be seen before COMMIT leaves, so the
// transaction must not commit, and Run must say so with a definite error
// (not txn.ErrCommitUnknown) matching context.Canceled; the connection goes
// back to the pool and the next Run works.
func CancelJustBeforeCommit[T any](t *testing.T, db DB[T], prefix string, r *txn.Runner[T], opts ...txn.CallOption) {
	t.Helper()
	ctx := Context(t)
	tbl := CreateTable(t, db, prefix, "id INT PRIMARY KEY")
	for i := 1; i <= 20; i++ {
		rctx, cancel := context.WithCancel(ctx)
		err := r.WithInterceptor(cancelAt{txn.InterceptCommit, cancel}).Run(rctx, func(ctx context.Context, tx T) error {
			return db.TxExec(ctx, tx, "INSERT INTO "+tbl+" VALUES (?)", i)
		}, opts...)
		cancel()
		require.Error(t, err, "Run %d", i)
		assert.NotErrorIs(t, err, txn.ErrCommitUnknown, "Run %d: the cancellation was there before COMMIT was sent", i)
		assert.ErrorIs(t, err, context.Canceled, "Run %d", i)
		sctx, scancel := context.WithTimeout(ctx, 10*time.Second)
		require.NoError(t, poolSettles(sctx, db), "after Run %d", i)
		scancel()
	}
	assert.Zero(t, oneInt(t, ctx, db, "SELECT COUNT(*) FROM "+tbl), "no Run committed")
	require.NoError(t, r.Run(ctx, func(ctx context.Context, tx T) error {
		return db.TxExec(ctx, tx, "INSERT INTO "+tbl+" VALUES (0)")
	}, opts...))
	assert.Equal(t, 1, oneInt(t, ctx, db, "SELECT COUNT(*) FROM "+tbl))
}

// poolSettles waits until no connection of db's pool is checked out (a
// driver may close a broken connection on a goroutine of its own), or ctx
// ends.
func poolSettles[T any](ctx context.Context, db DB[T]) error {
	for db.ConnsInUse() != 0 {
		select {
		case <-ctx.Done():
			return fmt.Errorf("%d connections are still checked out of the pool: %w", db.ConnsInUse(), ctx.Err())
		case <-time.After(time.Millisecond):
		}
	}
	return nil
}
