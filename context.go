package txn

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
)

// frameKey is the context key under which a frame stores itself.
type frameKey struct{}

// callbackRegistrar is what OnCommit, which knows no handle type, needs of a
// frame.
type callbackRegistrar interface {
	onCommit(cb func()) error
}

// frame is one transaction or savepoint level. It is itself the context fn
// receives, so that carrying the transaction costs one allocation.
type frame[T any] struct {
	context.Context
	runner *Runner[T]
	cfg    *config // the outermost Run's
	tx     T
	parent *frame[T]
	depth  int

	mu        sync.Mutex
	callbacks []func()
	// On the outermost frame only: poison is the first retryable error
	// seen in a nested level, and aborted says that Run then rolled the
	// whole transaction back at once.
	poison error
	// ended is set, under mu, when the transaction or savepoint of this
	// level has ended; read without mu by Value. It sits beside the bools
	// so that a frame stays in the 112-byte size class.
	ended   atomic.Bool
	closed  bool
	aborted bool
	// bounded, on the outermost frame only: the transaction began with
	// its lock waits bounded, as a probe of the adaptive limit.
	bounded bool
}

// Value returns, for frameKey, the innermost frame whose transaction or
// savepoint has not ended (so a context that outlived its transaction
// carries none), and defers to the parent context for every other key.
func (f *frame[T]) Value(key any) any {
	if key == any(frameKey{}) && !f.ended.Load() {
		return f
	}
	return f.Context.Value(key)
}

func (f *frame[T]) onCommit(cb func()) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return fmt.Errorf("%w: OnCommit after the transaction or savepoint ended", ErrNoTransaction)
	}
	f.callbacks = append(f.callbacks, cb)
	return nil
}

// close ends a frame and returns its callbacks.
func (f *frame[T]) close() []func() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	f.ended.Store(true)
	return f.callbacks
}

// root returns the outermost frame.
func (f *frame[T]) root() *frame[T] {
	for f.parent != nil {
		f = f.parent
	}
	return f
}

// markPoisoned records on the outermost frame that a retryable error was
// seen inside, so that Run does not commit if fn swallows it, and on
// backends with savepoints (the SQL ones) rolls the whole transaction back
// at once: the database may already have done so (MySQL on a deadlock), and
// a statement fn runs afterwards must fail on the ended handle rather than
// run, and commit, on its own. Backends without savepoints (MongoDB) keep
// the transaction open to its end: there the server has aborted it and
// refuses its later operations, while an abort by the client would let
// them run outside any transaction.
func (f *frame[T]) markPoisoned(err error) {
	root := f.root()
	r := root.runner
	root.mu.Lock()
	first := root.poison == nil
	if first {
		root.poison = err
		root.aborted = r.sp != nil
	}
	abort := first && root.aborted
	root.mu.Unlock()
	if abort {
		_ = r.rollback(root.Context, root.cfg, root.tx)
	}
}

// lost returns the retryable error that doomed the attempt of f's
// transaction, or nil.
func (f *frame[T]) lost() error {
	root := f.root()
	root.mu.Lock()
	defer root.mu.Unlock()
	return root.poison
}

// OnCommit registers cb to run once, after the outermost transaction carried
// by ctx commits. Callbacks run in registration order on the goroutine that
// called Run, before Run returns; one that panics does not keep the later
// ones from running, and its panic then reaches Run's caller. Callbacks
// registered in an attempt that did not commit, or in a savepoint that was
// rolled back, never run. It
// returns ErrNoTransaction if ctx carries no transaction (or it has ended),
// ErrNilContext for a nil ctx and ErrNilFunc for a nil cb.
func OnCommit(ctx context.Context, cb func()) error {
	if cb == nil {
		return ErrNilFunc
	}
	if ctx == nil {
		return ErrNilContext
	}
	f, ok := ctx.Value(frameKey{}).(callbackRegistrar)
	if !ok {
		return ErrNoTransaction
	}
	return f.onCommit(cb)
}

// TxFrom returns the innermost transaction handle of type T carried by ctx,
// and false when ctx carries no transaction of that type, or only one that
// has ended (a context kept past its Run, as in an OnCommit callback). It
// lets code deep in a call chain join the transaction of its caller.
func TxFrom[T any](ctx context.Context) (T, bool) {
	if ctx != nil {
		if f, ok := ctx.Value(frameKey{}).(*frame[T]); ok {
			return f.tx, true
		}
	}
	var zero T
	return zero, false
}

// AnyTx returns the innermost transaction handle carried by ctx, whatever
// its type (a *sql.Tx, a pgx.Tx, an ORM's handle), and false when ctx
// carries no transaction, or only one that has ended. TxFrom is the typed
// form; AnyTx serves code that accepts several handle types, such as the
// repository helpers txnsql.TxOr and txnpgx.TxOr, which take any handle
// with the methods they need and refuse to fall back to the pool while
// ctx carries a transaction they cannot use.
func AnyTx(ctx context.Context) (any, bool) {
	if ctx != nil {
		if f, ok := ctx.Value(frameKey{}).(interface{ anyTx() any }); ok {
			return f.anyTx(), true
		}
	}
	return nil, false
}

func (f *frame[T]) anyTx() any { return f.tx }

// frameFor returns the innermost frame of handle type T carried by ctx, or
// an error saying what ctx carries instead.
func frameFor[T any](ctx context.Context) (*frame[T], error) {
	if ctx == nil {
		return nil, ErrNilContext
	}
	v := ctx.Value(frameKey{})
	if v == nil {
		// No transaction, or only ended ones (see frame.Value).
		return nil, ErrNoTransaction
	}
	f, ok := v.(*frame[T])
	if !ok {
		return nil, fmt.Errorf("%w of type %s: ctx carries a %s transaction; make fn take a %s",
			ErrNoTransaction, typeName[T](), handleType(v), handleType(v))
	}
	return f, nil
}

// handleType names the handle type of a frame of unknown type.
func handleType(v any) string {
	if h, ok := v.(interface{ handleType() string }); ok {
		return h.handleType()
	}
	return fmt.Sprintf("%T", v)
}

func (f *frame[T]) handleType() string { return typeName[T]() }

// typeName returns the name of T, interface types included.
func typeName[T any]() string {
	return fmt.Sprintf("%T", (*T)(nil))[1:]
}
