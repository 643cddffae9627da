package txn

import (
	"context"
	"fmt"
	"strconv"
)

// Savepointer is implemented by backends that support savepoints. Without
// it, a nested Run joins the outer transaction and Savepoint returns
// ErrSavepointUnsupported.
type Savepointer[T any] interface {
	// BeginSavepoint opens a savepoint called name inside tx and returns the
	// handle to use inside it (tx itself, or a nested handle).
	BeginSavepoint(ctx context.Context, tx T, name string) (T, error)
	// ReleaseSavepoint keeps the savepoint's work in the enclosing
	// transaction.
	ReleaseSavepoint(ctx context.Context, sp T, name string) error
	// RollbackToSavepoint undoes the savepoint's work, leaving the enclosing
	// transaction usable.
	RollbackToSavepoint(ctx context.Context, sp T, name string) error
}

// nested runs fn of a Run called inside the transaction of frame parent.
func (r *Runner[T]) nested(ctx context.Context, parent *frame[T], fn func(context.Context, T) error) error {
	if err := parent.lost(); err != nil {
		// The attempt is lost already: run nothing more of it.
		return err
	}
	if r.sp == nil {
		err := fn(ctx, parent.tx)
		if err != nil && r.losesTx(parent, err) {
			parent.markPoisoned(err)
		}
		if err == nil {
			// A level nested in fn lost the attempt and fn swallowed the
			// error: fn's work is lost with the transaction.
			err = parent.lost()
		}
		return err
	}
	return r.withSavepoint(ctx, parent, func(child *frame[T]) error { return fn(child, child.tx) })
}

// withSavepoint runs body inside a savepoint of parent's transaction. A
// permanent error rolls back to the savepoint and is returned; any other
// error is returned unchanged without touching the savepoint, and marks the
// transaction as lost, so that the outermost Run restarts it. When the
// transaction was lost while body ran (a level nested in body saw a
// retryable error that body swallowed), the savepoint is neither released
// nor rolled back, as the transaction has ended, and the error that lost it
// is returned in place of nil.
func (r *Runner[T]) withSavepoint(ctx context.Context, parent *frame[T], body func(*frame[T]) error) error {
	name := "txn_sp_" + strconv.Itoa(parent.depth+1)
	spTx, err := r.sp.BeginSavepoint(ctx, parent.tx, name)
	if err != nil {
		if r.classify(err) != ClassPermanent {
			parent.markPoisoned(err)
		}
		return fmt.Errorf("txn: begin savepoint: %w", err)
	}
	child := &frame[T]{Context: ctx, runner: r, cfg: parent.cfg, tx: spTx, parent: parent, depth: parent.depth + 1}
	if r.binder != nil {
		child.tx = r.binder.BindHandle(child, spTx)
	}
	returned := false
	defer func() {
		if !returned {
			child.close()
			if parent.lost() == nil {
				r.rollbackTo(ctx, parent.cfg, spTx, name)
			}
		}
	}()
	err = body(child)
	returned = true
	callbacks := child.close()
	if err != nil && r.losesTx(parent, err) {
		parent.markPoisoned(err)
		return err
	}
	if lost := parent.lost(); lost != nil {
		// A level nested in body saw a retryable error that body
		// swallowed: the whole transaction has been rolled back (see
		// markPoisoned), body's work with it. Send nothing more to the
		// transaction, and say why the work is gone unless body has an
		// error of its own.
		if err == nil {
			err = lost
		}
		return err
	}
	if err != nil {
		r.rollbackTo(ctx, parent.cfg, spTx, name)
		return err
	}
	if err := r.sp.ReleaseSavepoint(ctx, spTx, name); err != nil {
		if r.classify(err) != ClassPermanent {
			parent.markPoisoned(err)
		}
		return fmt.Errorf("txn: release savepoint: %w", err)
	}
	if len(callbacks) > 0 {
		parent.mu.Lock()
		parent.callbacks = append(parent.callbacks, callbacks...)
		parent.mu.Unlock()
	}
	return nil
}

// rollbackTo undoes a savepoint on a context detached from cancellation.
func (r *Runner[T]) rollbackTo(ctx context.Context, cfg *config, sp T, name string) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.rollbackTimeout)
	defer cancel()
	if err := r.sp.RollbackToSavepoint(rctx, sp, name); err != nil && r.classify(err) != ClassPermanent {
		// The enclosing transaction cannot be trusted any more.
		if f, ok := ctx.Value(frameKey{}).(*frame[T]); ok {
			f.markPoisoned(err)
		}
	}
}

// Savepoint runs fn inside a savepoint of the transaction carried by ctx,
// handing fn the savepoint's transaction handle as Run does; T is inferred
// from fn. If fn returns a permanent error, the savepoint's work (and its
// OnCommit callbacks) is undone, the transaction stays usable, and the
// error is returned. A retryable error is returned unchanged and dooms the
// transaction: the outermost Run will restart it even if the caller ignores
// the error; the whole transaction is rolled back at once, so that what the
// caller runs on it afterwards fails instead of committing on its own, and
// a later Savepoint or nested Run of the same attempt returns that error
// again without running its fn. When fn swallows such an error from a
// level nested in it, Savepoint returns that error in place of nil: fn's
// work was rolled back with the transaction. It returns ErrNilFunc for a nil fn,
// ErrNoTransaction when ctx carries no transaction (or one that has ended),
// or one whose handle is not a T (the message names the type it carries),
// and ErrSavepointUnsupported on backends without savepoints.
func Savepoint[T any](ctx context.Context, fn func(ctx context.Context, tx T) error) error {
	if fn == nil {
		return ErrNilFunc
	}
	f, err := frameFor[T](ctx)
	if err != nil {
		return err
	}
	r := f.runner
	if r.sp == nil {
		return ErrSavepointUnsupported
	}
	if err := f.lost(); err != nil {
		// The attempt is lost already: run nothing more of it.
		return err
	}
	return r.withSavepoint(ctx, f, func(child *frame[T]) error { return fn(child, child.tx) })
}
