package txn

import (
	"context"
	"fmt"
	"sync"
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
	poison    error // a retryable error seen below this level
	closed    bool
}

// Value returns the innermost frame for frameKey and defers to the parent
// context for every other key.
func (f *frame[T]) Value(key any) any {
	if key == any(frameKey{}) {
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
// seen inside, so that Run does not commit if fn swallows it.
func (f *frame[T]) markPoisoned(err error) {
	root := f.root()
	root.mu.Lock()
	if root.poison == nil {
		root.poison = err
	}
	root.mu.Unlock()
}

// OnCommit registers cb to run once, after the outermost transaction carried
// by ctx commits. Callbacks run in registration order on the goroutine that
// called Run, before Run returns. Callbacks registered in an attempt that
// did not commit, or in a savepoint that was rolled back, never run. It
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
// and false when ctx carries no transaction of that type. It lets code deep
// in a call chain join the transaction of its caller.
func TxFrom[T any](ctx context.Context) (T, bool) {
	if ctx != nil {
		if f, ok := ctx.Value(frameKey{}).(*frame[T]); ok {
			return f.tx, true
		}
	}
	var zero T
	return zero, false
}

// frameFor returns the innermost frame of handle type T carried by ctx, or
// an error saying what ctx carries instead.
func frameFor[T any](ctx context.Context) (*frame[T], error) {
	if ctx == nil {
		return nil, ErrNilContext
	}
	v := ctx.Value(frameKey{})
	if v == nil {
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
