package txnsql

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/txnkit/txn"
)

// BeginDetached begins a transaction with begin, giving it a context that
// ctx cancels only while begin runs: the wait for a connection and BEGIN
// stay bounded by ctx, but the transaction does not end when ctx does.
// database/sql rolls a transaction back by itself when the context given to
// BeginTx ends, after which Commit and Rollback report sql.ErrTxDone just as
// they do when fn ended the transaction; Run always ends the transaction
// itself and must know when fn did. The context begin gets carries ctx's
// values. Statements in fn stay bounded by the context they are given.
//
// It returns begin's error as it is. When ctx ends while begin runs, it
// rolls back with rollback, without waiting for it, whatever began and
// returns an error, prefixed
// with name (the backend package's name), wrapping context.Cause(ctx).
// Every backend and integration over database/sql (txnmysql, txnsqlite,
// txngorm, txnsqlx, txnbun, txnent) begins its transactions with it.
func BeginDetached[T any](ctx context.Context, name string, begin func(context.Context) (T, error), rollback func(T) error) (T, error) {
	if ctx.Done() == nil {
		// ctx never ends: database/sql will not end the transaction.
		return begin(ctx)
	}
	bctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stop := context.AfterFunc(ctx, cancel)
	tx, err := begin(bctx)
	if !stop() {
		// ctx ended while the transaction began: database/sql rolls
		// back what began by itself; rollback makes sure of it. It runs
		// on a goroutine of its own, so that a connection that goes
		// silent now cannot hold Run past ctx: the rollback finishes, or
		// fails, with its connection.
		if err == nil {
			go func() { _ = rollback(tx) }()
		}
		var zero T
		return zero, fmt.Errorf("%s: begin: %w", name, context.Cause(ctx))
	}
	return tx, err
}

// CommitWithin runs commit (the Commit of a transaction begun by
// BeginDetached), bounded by ctx. database/sql's Commit takes no context,
// so it runs on its own goroutine: when ctx ends first, CommitWithin
// returns an error that Classify reports as txn.ClassConnLost (the outcome
// is unknown, Run reports txn.ErrCommitUnknown) and leaves the commit to
// finish, or fail, with its connection. Otherwise it returns commit's
// error, wrapped with txn.ErrTxDone when it is sql.ErrTxDone (fn already
// ended the transaction). name is the backend package's name, for the
// message.
func CommitWithin(ctx context.Context, name string, commit func() error) error {
	if ctx.Done() == nil {
		return doneErr(commit())
	}
	ok, err := bounded(ctx, commit)
	if !ok {
		return &commitUnansweredError{backend: name, err: context.Cause(ctx)}
	}
	return doneErr(err)
}

// CommitOrRollbackWithin is CommitWithin for a transaction whose context
// may have ended before its COMMIT: database/sql's Commit takes no context,
// so CommitWithin sends COMMIT even then and, the context being over,
// reports the outcome unknown while the transaction commits. When ctx has
// already ended, CommitOrRollbackWithin sends no COMMIT: it rolls the
// transaction back with rollback (bounded by txn.DefaultRollbackTimeout,
// see RollbackWithin) and returns an error, prefixed with name, wrapping
// context.Cause(ctx); the outcome is definite, nothing was committed (an
// error wrapping txn.ErrTxDone if the transaction had already ended).
// Otherwise it is CommitWithin. The backends built on this package and
// the integrations over database/sql commit with it.
func CommitOrRollbackWithin(ctx context.Context, name string, commit, rollback func() error) error {
	if ctx.Err() == nil {
		return CommitWithin(ctx, name, commit)
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), txn.DefaultRollbackTimeout)
	defer cancel()
	err := RollbackWithin(rctx, name, rollback)
	switch {
	case errors.Is(err, txn.ErrTxDone):
		return err
	case err != nil:
		// Not committed all the same: COMMIT was never sent.
		return fmt.Errorf("%s: context done before COMMIT was sent, transaction not committed (its rollback: %v): %w", name, err, context.Cause(ctx))
	}
	return fmt.Errorf("%s: context done before COMMIT was sent, transaction rolled back: %w", name, context.Cause(ctx))
}

// RollbackWithin runs rollback, bounded by ctx (Run's RollbackTimeout) the
// same way as CommitWithin: past it, it returns an error prefixed with name
// wrapping the context's cause and leaves the rollback to finish with its
// connection. Otherwise it returns rollback's error, wrapped with
// txn.ErrTxDone when it is sql.ErrTxDone.
func RollbackWithin(ctx context.Context, name string, rollback func() error) error {
	if ctx.Done() == nil {
		return doneErr(rollback())
	}
	ok, err := bounded(ctx, rollback)
	if !ok {
		return fmt.Errorf("%s: rollback not answered in time, left to its connection: %w", name, context.Cause(ctx))
	}
	return doneErr(err)
}

// bounded runs end (a Commit or Rollback) on a goroutine and returns true
// and its error, or false if ctx ended first.
func bounded(ctx context.Context, end func() error) (answered bool, err error) {
	done := make(chan error, 1)
	go func() { done <- end() }()
	select {
	case err := <-done:
		return true, err
	case <-ctx.Done():
		select {
		case err := <-done:
			// Both happened: the answer is known.
			return true, err
		default:
			return false, nil
		}
	}
}

// commitUnansweredError is a COMMIT that had not been answered when the
// context ended: it may or may not take effect.
type commitUnansweredError struct {
	backend string
	err     error
}

func (e *commitUnansweredError) Error() string {
	return e.backend + ": commit not answered before the context ended, outcome unknown: " + e.err.Error()
}

func (e *commitUnansweredError) Unwrap() error { return e.err }

// doneErr wraps sql.ErrTxDone with txn.ErrTxDone.
func doneErr(err error) error {
	if errors.Is(err, sql.ErrTxDone) {
		return fmt.Errorf("%w: %w", txn.ErrTxDone, err)
	}
	return err
}
