package txnsql_test

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/txnkit/txn"
	"github.com/txnkit/txn/backends/txnsql"
)

// These tests run txnsql over a small in-test database/sql driver that logs
// what database/sql asks of it and fails where a test scripts it to, so
// that what txnsql sends (BEGIN options, savepoint statements) and how it
// reads the answers are checked exactly. The behaviour against real
// servers is covered through txnmysql (MariaDB), txnsqlite (SQLite) and
// txnpgx's stdlib test (PostgreSQL), which all build on this package.

// logDriver is the driver: a connector that hands out connections sharing
// one log and one script.
type logDriver struct {
	mu        sync.Mutex
	log       []string
	execErrs  map[string]error // statement prefix -> error, used once
	commitErr []error
}

func (d *logDriver) record(format string, args ...any) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.log = append(d.log, fmt.Sprintf(format, args...))
}

func (d *logDriver) entries() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.log...)
}

func (d *logDriver) Connect(context.Context) (driver.Conn, error) { return &logConn{d: d}, nil }
func (d *logDriver) Driver() driver.Driver                        { return nil }

type logConn struct{ d *logDriver }

func (c *logConn) Prepare(string) (driver.Stmt, error) {
	return nil, errors.New("logdriver: no prepare")
}
func (c *logConn) Close() error              { return nil }
func (c *logConn) Begin() (driver.Tx, error) { return nil, errors.New("logdriver: use BeginTx") }

func (c *logConn) BeginTx(_ context.Context, o driver.TxOptions) (driver.Tx, error) {
	c.d.record("begin isolation=%d readonly=%v", o.Isolation, o.ReadOnly)
	return &logTx{d: c.d}, nil
}

func (c *logConn) ExecContext(_ context.Context, query string, _ []driver.NamedValue) (driver.Result, error) {
	c.d.record("%s", query)
	c.d.mu.Lock()
	defer c.d.mu.Unlock()
	for prefix, err := range c.d.execErrs {
		if strings.HasPrefix(query, prefix) {
			delete(c.d.execErrs, prefix)
			return nil, err
		}
	}
	return driver.RowsAffected(1), nil
}

type logTx struct{ d *logDriver }

func (t *logTx) Commit() error {
	t.d.record("commit")
	t.d.mu.Lock()
	defer t.d.mu.Unlock()
	if len(t.d.commitErr) > 0 {
		err := t.d.commitErr[0]
		t.d.commitErr = t.d.commitErr[1:]
		return err
	}
	return nil
}

func (t *logTx) Rollback() error {
	t.d.record("rollback")
	return nil
}

func open(t *testing.T) (*logDriver, *sql.DB) {
	t.Helper()
	d := &logDriver{execErrs: map[string]error{}}
	db := sql.OpenDB(d)
	t.Cleanup(func() { _ = db.Close() })
	return d, db
}

// errConflict is the scripted driver's lost race.
var errConflict = errors.New("logdriver: conflict")

// conflicts is a driver table that knows errConflict.
func conflicts(err error) txn.Class {
	if errors.Is(err, errConflict) {
		return txn.ClassRetryable
	}
	return txn.ClassPermanent
}

// fast returns options for retries without waiting, plus extra.
func fast(extra ...txn.RunnerOption) []txn.RunnerOption {
	return append([]txn.RunnerOption{txn.WithBackoff(txn.Constant(0)), txn.NoAdaptive()}, extra...)
}

func TestNewNilDB(t *testing.T) {
	err := txnsql.New(nil).Run(context.Background(), func(context.Context, *sql.Tx) error { return nil })
	assert.ErrorIs(t, err, txn.ErrNilRunner)
}

func TestBeginOptions(t *testing.T) {
	d, db := open(t)
	ctx := context.Background()
	noop := func(context.Context, *sql.Tx) error { return nil }
	mine := txnsql.Driver{Name: "txnmine"}
	r := txnsql.NewRunner(db, mine)

	t.Run("none", func(t *testing.T) {
		require.NoError(t, r.Run(ctx, noop))
	})
	t.Run("the driver's own", func(t *testing.T) {
		require.NoError(t, r.WithBegin(mine.TxOptions(sql.TxOptions{Isolation: sql.LevelSerializable})).Run(ctx, noop))
	})
	t.Run("txnsql's, on any database/sql Runner", func(t *testing.T) {
		require.NoError(t, r.WithBegin(txnsql.TxOptions(sql.TxOptions{ReadOnly: true})).Run(ctx, noop))
	})
	t.Run("the last wins", func(t *testing.T) {
		require.NoError(t, r.WithBegin(
			txnsql.TxOptions(sql.TxOptions{Isolation: sql.LevelSerializable}),
			mine.TxOptions(sql.TxOptions{Isolation: sql.LevelReadCommitted})).Run(ctx, noop))
	})
	assert.Equal(t, []string{
		"begin isolation=0 readonly=false", "commit",
		fmt.Sprintf("begin isolation=%d readonly=false", sql.LevelSerializable), "commit",
		"begin isolation=0 readonly=true", "commit",
		fmt.Sprintf("begin isolation=%d readonly=false", sql.LevelReadCommitted), "commit",
	}, d.entries())

	t.Run("another backend's is refused at Begin, naming both", func(t *testing.T) {
		other := txnsql.Driver{Name: "txnother"}
		called := false
		err := r.WithBegin(other.TxOptions(sql.TxOptions{})).Run(ctx, func(context.Context, *sql.Tx) error {
			called = true
			return nil
		})
		require.ErrorIs(t, err, txn.ErrBadOption)
		assert.EqualError(t, err, "txn: invalid option: a begin option built by txnother was given to a txnmine Runner; "+
			"use txnmine's begin options (or txnsql.TxOptions)")
		assert.False(t, called)
	})
	t.Run("a value that is not sql.TxOptions is refused", func(t *testing.T) {
		err := r.WithBegin(txn.NewBeginOption[*sql.Tx]("txnmine", 42)).Run(ctx, noop)
		require.ErrorIs(t, err, txn.ErrBadOption)
		assert.ErrorContains(t, err, "carries int, not sql.TxOptions")
	})
}

func TestClassify(t *testing.T) {
	assert.Equal(t, txn.ClassConnLost, txnsql.Classify(driver.ErrBadConn))
	assert.Equal(t, txn.ClassConnLost, txnsql.Classify(fmt.Errorf("x: %w", driver.ErrBadConn)))
	assert.Equal(t, txn.ClassPermanent, txnsql.Classify(errConflict))
	assert.Equal(t, txn.ClassPermanent, txnsql.Classify(nil))
}

// TestDriverTableRetries: an error the Driver's table marks retryable,
// returned by a statement in fn, rolls back and runs fn again.
func TestDriverTableRetries(t *testing.T) {
	d, db := open(t)
	d.execErrs["UPDATE"] = errConflict
	r := txnsql.NewRunner(db, txnsql.Driver{Name: "txnmine", Classify: conflicts}, fast()...)
	calls := 0
	err := r.Run(context.Background(), func(ctx context.Context, tx *sql.Tx) error {
		calls++
		_, err := tx.ExecContext(ctx, "UPDATE t SET v = v + 1")
		return err
	})
	require.NoError(t, err)
	assert.Equal(t, 2, calls)
	assert.Equal(t, []string{
		"begin isolation=0 readonly=false", "UPDATE t SET v = v + 1", "rollback",
		"begin isolation=0 readonly=false", "UPDATE t SET v = v + 1", "commit",
	}, d.entries())

	// txnsql.New knows no table: the same error is returned at once.
	d.execErrs["UPDATE"] = errConflict
	calls = 0
	err = txnsql.New(db, fast()...).Run(context.Background(), func(ctx context.Context, tx *sql.Tx) error {
		calls++
		_, err := tx.ExecContext(ctx, "UPDATE t SET v = v + 1")
		return err
	})
	assert.ErrorIs(t, err, errConflict)
	assert.Equal(t, 1, calls)
}

// TestLostConnectionAtCommit: driver.ErrBadConn from COMMIT is an unknown
// outcome, also under a classifier given with txn.WithClassifier that knows
// nothing of it, and also for a Driver's own connection test.
func TestLostConnectionAtCommit(t *testing.T) {
	errGone := errors.New("logdriver: connection gone")
	gone := func(err error) txn.Class {
		if errors.Is(err, errGone) {
			return txn.ClassConnLost
		}
		return txn.ClassPermanent
	}
	for name, tc := range map[string]struct {
		commitErr error
		runner    func(db *sql.DB) *txnsql.Runner
	}{
		"New, ErrBadConn":                {driver.ErrBadConn, func(db *sql.DB) *txnsql.Runner { return txnsql.New(db, fast()...) }},
		"WithClassifier that ignores it": {driver.ErrBadConn, func(db *sql.DB) *txnsql.Runner { return txnsql.New(db, fast(txn.WithClassifier(conflicts))...) }},
		"Driver's connection test": {errGone, func(db *sql.DB) *txnsql.Runner {
			return txnsql.NewRunner(db, txnsql.Driver{Name: "txnmine", ClassifyConn: gone}, fast()...)
		}},
		"Driver's test under WithClassifier": {errGone, func(db *sql.DB) *txnsql.Runner {
			return txnsql.NewRunner(db, txnsql.Driver{Name: "txnmine", ClassifyConn: gone}, fast(txn.WithClassifier(conflicts))...)
		}},
	} {
		t.Run(name, func(t *testing.T) {
			d, db := open(t)
			d.commitErr = []error{tc.commitErr}
			calls := 0
			err := tc.runner(db).Run(context.Background(), func(context.Context, *sql.Tx) error {
				calls++
				return nil
			})
			require.ErrorIs(t, err, txn.ErrCommitUnknown)
			assert.ErrorIs(t, err, tc.commitErr)
			assert.Equal(t, 1, calls, "fn is not run again after an unknown commit outcome")
		})
	}
}

// TestFnCommitsItself: a fn that commits the *sql.Tx gets ErrFnFinishedTx,
// with a message that says so once.
func TestFnCommitsItself(t *testing.T) {
	_, db := open(t)
	err := txnsql.New(db).Run(context.Background(), func(_ context.Context, tx *sql.Tx) error {
		return tx.Commit()
	})
	require.ErrorIs(t, err, txn.ErrFnFinishedTx)
	assert.ErrorIs(t, err, sql.ErrTxDone)
	assert.EqualError(t, err, "txn: fn committed or rolled back the transaction itself; leave that to Run "+
		"(commit said: sql: transaction has already been committed or rolled back)")
}

// TestSavepointStatements: Savepoint and a nested Run send the standard
// statements; a permanent error rolls back to the savepoint only.
func TestSavepointStatements(t *testing.T) {
	d, db := open(t)
	r := txnsql.New(db)
	errBad := errors.New("bad row")
	err := r.Run(context.Background(), func(ctx context.Context, tx *sql.Tx) error {
		spErr := txn.Savepoint(ctx, func(ctx context.Context, sp *sql.Tx) error {
			assert.Same(t, tx, sp, "database/sql savepoints share the *sql.Tx")
			return errBad
		})
		require.ErrorIs(t, spErr, errBad)
		return r.Run(ctx, func(ctx context.Context, tx *sql.Tx) error { return nil })
	})
	require.NoError(t, err)
	assert.Equal(t, []string{
		"begin isolation=0 readonly=false",
		"SAVEPOINT txn_sp_1", "ROLLBACK TO SAVEPOINT txn_sp_1",
		"SAVEPOINT txn_sp_1", "RELEASE SAVEPOINT txn_sp_1",
		"commit",
	}, d.entries())
}

// TestSavepointBeginFails: a failed SAVEPOINT is reported once, wrapped.
func TestSavepointBeginFails(t *testing.T) {
	d, db := open(t)
	d.execErrs["SAVEPOINT"] = errors.New("logdriver: no savepoints today")
	var spErr error
	require.NoError(t, txnsql.New(db).Run(context.Background(), func(ctx context.Context, _ *sql.Tx) error {
		spErr = txn.Savepoint(ctx, func(context.Context, *sql.Tx) error { return nil })
		return nil
	}))
	assert.EqualError(t, spErr, "txn: begin savepoint: logdriver: no savepoints today")
}
