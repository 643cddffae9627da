// Package integrationtest is the real-server test suite shared by the
// integration modules (txngorm, txnsqlx, ...). Each module implements DB
// over its library's handles; the scenarios here provoke real conflicts
// (two connections, a barrier, the same rows) through it and check the end
// state, so that every integration is held to the same proof.
package integrationtest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/txnkit/txn"
)

// Timeout bounds every scenario, so that a lock nobody releases fails the
// test instead of hanging it.
const Timeout = 60 * time.Second

// Dialect says how one database behaves in the scenarios.
type Dialect struct {
	// Name names the subtest.
	Name string
	// TxOptions are the transaction options of the conflicting Runs.
	TxOptions sql.TxOptions
	// ShareLock is appended to the read of a read-then-write, so that two
	// such transactions deadlock (MySQL and MariaDB, whose REPEATABLE READ
	// does not detect lost updates).
	ShareLock string
	// ForUpdate is appended to the locking reads of the bank transfer.
	ForUpdate string
	// SingleWriter is true for SQLite: a transaction that has written
	// holds the only write lock until it ends.
	SingleWriter bool
	// Conflict reports whether err carries the driver's own report of a
	// lost race; the library must hand it over unchanged.
	Conflict func(err error) bool
}

// DB is what the scenarios need of one database, through the library under
// test. Queries use '?' placeholders; implementations rebind them if their
// library does not. T is the handle fn receives.
type DB[T any] interface {
	// Dialect describes the database.
	Dialect() Dialect
	// Runner returns a Runner of the integration under test over the
	// database, with the classifier the module recommends for it.
	Runner(opts ...txn.RunnerOption) *txn.Runner[T]
	// TxOptions returns the integration's begin option for o.
	TxOptions(o sql.TxOptions) txn.BeginOption[T]
	// Exec runs a statement outside any transaction.
	Exec(ctx context.Context, query string, args ...any) error
	// Ints and Strings run a query of one column outside any transaction.
	Ints(ctx context.Context, query string, args ...any) ([]int, error)
	Strings(ctx context.Context, query string, args ...any) ([]string, error)
	// TxExec runs a statement on tx.
	TxExec(ctx context.Context, tx T, query string, args ...any) error
	// TxInt runs a query of one integer on tx.
	TxInt(ctx context.Context, tx T, query string, args ...any) (int, error)
	// Begin starts a transaction outside any Runner; Commit and Rollback
	// end it.
	Begin(ctx context.Context) (T, error)
	Commit(tx T) error
	Rollback(tx T)
	// ConnsInUse returns the number of connections checked out of the pool.
	ConnsInUse() int
}

// Context returns a context bounded by Timeout and canceled when t ends,
// before its cleanups run.
func Context(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), Timeout)
	t.Cleanup(cancel)
	return ctx
}

// TableName returns prefix_<test>_<random>: the test's name without
// "Test", lower-cased, every other character an underscore, cut to its
// last keep characters, then 8 random hex digits, so that tests and runs
// sharing a database never meet.
func TableName(t testing.TB, prefix string, keep int) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	base := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			return r
		case r >= 'A' && r <= 'Z':
			return r - 'A' + 'a'
		}
		return '_'
	}, strings.TrimPrefix(t.Name(), "Test"))
	if len(base) > keep {
		base = base[len(base)-keep:]
	}
	return prefix + "_" + base + "_" + hex.EncodeToString(b[:])
}

// CreateTable creates a table named by TableName from columns and drops
// it when t ends. It returns the name.
func CreateTable[T any](t testing.TB, db DB[T], prefix, columns string) string {
	t.Helper()
	name := TableName(t, prefix, 30)
	require.NoError(t, db.Exec(context.Background(), "CREATE TABLE "+name+" ("+columns+")"))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := db.Exec(ctx, "DROP TABLE IF EXISTS "+name); err != nil {
			t.Logf("drop %s: %v", name, err)
		}
	})
	return name
}

// Rebind rewrites the '?' placeholders of query as $1, $2, ... for
// PostgreSQL drivers that take only those.
func Rebind(query string) string {
	var b strings.Builder
	n := 0
	for _, r := range query {
		if r == '?' {
			n++
			fmt.Fprintf(&b, "$%d", n)
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

// Barrier lets n goroutines wait for each other once.
type Barrier struct {
	mu   sync.Mutex
	left int
	done chan struct{}
}

// NewBarrier returns a Barrier for n goroutines.
func NewBarrier(n int) *Barrier { return &Barrier{left: n, done: make(chan struct{})} }

// Wait blocks until n goroutines called Wait, or ctx ends; then it returns
// an error wrapping ctx's.
func (b *Barrier) Wait(ctx context.Context) error {
	b.mu.Lock()
	b.left--
	if b.left == 0 {
		close(b.done)
	}
	b.mu.Unlock()
	select {
	case <-b.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("barrier: %w", ctx.Err())
	}
}

// WaitFor is Wait bounded by d instead of a context: after d it returns an
// error saying the others never arrived.
func (b *Barrier) WaitFor(d time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	if err := b.Wait(ctx); err != nil {
		return fmt.Errorf("the others never arrived: %w", err)
	}
	return nil
}

// Recorder is a txn.Observer that records retries and commits.
type Recorder struct {
	txn.NopObserver
	mu      sync.Mutex
	retries []txn.RetryEvent
	commits int
}

// RetryScheduled records e.
func (r *Recorder) RetryScheduled(_ context.Context, e txn.RetryEvent) {
	r.mu.Lock()
	r.retries = append(r.retries, e)
	r.mu.Unlock()
}

// Committed counts a commit.
func (r *Recorder) Committed(context.Context, txn.CommitEvent) {
	r.mu.Lock()
	r.commits++
	r.mu.Unlock()
}

// Snapshot returns the retries and the number of commits seen so far.
func (r *Recorder) Snapshot() ([]txn.RetryEvent, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]txn.RetryEvent(nil), r.retries...), r.commits
}

// increment reads row 1's counter of table (with the dialect's share lock),
// calls wait, then writes the value read plus one: two of them running at
// once lose a race that the database reports.
func increment[T any](ctx context.Context, db DB[T], tx T, table string, wait func() error) error {
	n, err := db.TxInt(ctx, tx, "SELECT n FROM "+table+" WHERE id = 1"+db.Dialect().ShareLock)
	if err != nil {
		return err
	}
	if wait != nil {
		if err := wait(); err != nil {
			return txn.Permanent(err)
		}
	}
	return db.TxExec(ctx, tx, "UPDATE "+table+" SET n = ? WHERE id = 1", n+1)
}

// oneInt returns the single value of a one-row, one-column integer query.
func oneInt[T any](t testing.TB, ctx context.Context, db DB[T], query string, args ...any) int {
	t.Helper()
	vs, err := db.Ints(ctx, query, args...)
	require.NoError(t, err)
	require.Len(t, vs, 1)
	return vs[0]
}

// errInner is the permanent error of the nested Runs that roll back.
var errInner = errors.New("inner step failed")

// ScanAll reads every row of a one-column result into a slice and closes
// rows. It returns the first error of the scan or of the rows.
func ScanAll[V any](rows *sql.Rows, err error) ([]V, error) {
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []V
	for rows.Next() {
		var v V
		if err := rows.Scan(&v); err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// Opener opens one database, afresh, through the integration under test.
type Opener[T any] struct {
	// Name names the database's subtests.
	Name string
	// Open opens it for t, or skips t (fails it with TXN_REQUIRE_DBS=1)
	// when the server cannot be reached.
	Open func(t *testing.T) DB[T]
}

// RunAll runs every shared scenario as a subtest of t, and in it a subtest
// per database of dbs: ConflictRetried, NestedRollsBackToSavepoint,
// NestedConflictRestarts with fn propagating and swallowing the nested
// error, PanicRollsBack, BankWorkload and ContextEndsDuringFn. Tables are
// named after prefix.
func RunAll[T any](t *testing.T, prefix string, dbs []Opener[T]) {
	scenario := func(name string, run func(t *testing.T, db DB[T])) {
		t.Run(name, func(t *testing.T) {
			for _, o := range dbs {
				t.Run(o.Name, func(t *testing.T) { run(t, o.Open(t)) })
			}
		})
	}
	scenario("ConflictRetried", func(t *testing.T, db DB[T]) { ConflictRetried(t, db, prefix) })
	scenario("NestedRollsBackToSavepoint", func(t *testing.T, db DB[T]) { NestedRollsBackToSavepoint(t, db, prefix) })
	scenario("NestedConflictRestarts/propagated", func(t *testing.T, db DB[T]) { NestedConflictRestarts(t, db, prefix, false) })
	scenario("NestedConflictRestarts/swallowed", func(t *testing.T, db DB[T]) { NestedConflictRestarts(t, db, prefix, true) })
	scenario("PanicRollsBack", func(t *testing.T, db DB[T]) { PanicRollsBack(t, db, prefix) })
	scenario("BankWorkload", func(t *testing.T, db DB[T]) { BankWorkload(t, db, prefix) })
	scenario("ContextEndsDuringFn", func(t *testing.T, db DB[T]) { ContextEndsDuringFn(t, db, prefix) })
	scenario("CancelJustBeforeCommit", func(t *testing.T, db DB[T]) { CancelJustBeforeCommit(t, db, prefix, db.Runner()) })
}

// CheckRacedPair checks what two Runs left that raced on the row id = 1
// of counter, each incrementing it once and logging its attempt as
// "g<run>-a<attempt>" in log, with calls counting each Run's attempts and
// rec observing both: the counter is 2 (no update lost, none doubled), both
// committed, every retry was on the driver's conflict error, and, where
// the database lets transactions run side by side, log holds only the
// committed attempts' rows.
func CheckRacedPair[T any](t *testing.T, ctx context.Context, db DB[T], rec *Recorder, counter, log string, calls *[2]atomic.Int32) {
	t.Helper()
	d := db.Dialect()
	n, err := db.Ints(ctx, "SELECT n FROM "+counter+" WHERE id = 1")
	require.NoError(t, err)
	assert.Equal(t, []int{2}, n, "no update lost, none doubled")
	retries, commits := rec.Snapshot()
	assert.Equal(t, 2, commits)
	require.NotEmpty(t, retries)
	for _, e := range retries {
		assert.True(t, d.Conflict(e.Err), "retried on the driver's error: %v", e.Err)
	}
	if !d.SingleWriter {
		got, err := db.Strings(ctx, "SELECT name FROM "+log+" ORDER BY name")
		require.NoError(t, err)
		want := []string{fmt.Sprintf("g0-a%d", calls[0].Load()), fmt.Sprintf("g1-a%d", calls[1].Load())}
		assert.Equal(t, want, got, "only the committed attempts' rows")
	}
}

// Hold starts a Run on r, with opts, whose fn runs first (when not nil) and
// then keeps the transaction open until finish is called or ctx ends. It
// returns once the Run is inside fn, holding what it was admitted with (its
// keys, its slot of the adaptive limit). finish lets the Run commit and
// returns what Run returned; later calls return the same.
func Hold[T any](t *testing.T, ctx context.Context, r *txn.Runner[T], first func(context.Context, T) error, opts ...txn.CallOption) (finish func() error) {
	t.Helper()
	entered, release := make(chan struct{}), make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- r.Run(ctx, func(ctx context.Context, tx T) error {
			if first != nil {
				if err := first(ctx, tx); err != nil {
					return err
				}
			}
			close(entered)
			select {
			case <-release:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}, opts...)
	}()
	select {
	case <-entered:
	case err := <-done:
		require.FailNow(t, "the held Run returned before it held", "%v", err)
	}
	var once sync.Once
	var err error
	return func() error {
		once.Do(func() {
			close(release)
			err = <-done
		})
		return err
	}
}
