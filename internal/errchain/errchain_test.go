package errchain_test

import (
	"errors"
	"fmt"
	"io"
	"net"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/txnkit/txn/internal/errchain"
)

// codeErr is a driver-style error: pointer receiver methods that read the
// receiver, so a typed nil of it panics when a method is called.
type codeErr struct{ code int }

func (e *codeErr) Error() string { return fmt.Sprintf("code %d", e.code) }

// valueWrap has value-receiver methods: errors.As and errors.Is panic when
// they call Unwrap on a nil *valueWrap.
type valueWrap struct{ err error }

func (w valueWrap) Error() string { return "wrap" }
func (w valueWrap) Unwrap() error { return w.err }

// multi is an error with Unwrap() []error.
type multi []error

func (m multi) Error() string   { return "multi" }
func (m multi) Unwrap() []error { return m }

// loop wraps itself.
type loop struct{}

func (l *loop) Error() string { return "loop" }
func (l *loop) Unwrap() error { return l }

// panicky panics in every method.
type panicky struct{}

func (panicky) Error() string       { panic("Error") }
func (panicky) Unwrap() error       { panic("Unwrap") }
func (panicky) Is(error) bool       { panic("Is") }
func (panicky) As(any) bool         { panic("As") }
func (panicky) SafeToRetry() bool   { panic("SafeToRetry") }
func (panicky) HasErrorLabel() bool { panic("HasErrorLabel") }

func TestStdlibPanicsOnTypedNil(t *testing.T) {
	// The reason for this package: errors.As hands out the nil pointer,
	// and walks through a nil *valueWrap by calling its Unwrap.
	var ce *codeErr
	require.True(t, errors.As(fmt.Errorf("x: %w", (*codeErr)(nil)), &ce))
	require.Nil(t, ce)
	assert.Panics(t, func() { errors.Is(fmt.Errorf("x: %w", (*valueWrap)(nil)), io.EOF) })
}

func TestAsSkipsTypedNils(t *testing.T) {
	real := &codeErr{code: 7}
	for name, err := range map[string]error{
		"wrapped":        fmt.Errorf("a: %w", fmt.Errorf("b: %w", (*codeErr)(nil))),
		"joined":         errors.Join((*codeErr)(nil), (*valueWrap)(nil)),
		"multi":          multi{(*codeErr)(nil), nil, (*valueWrap)(nil), multi(nil)},
		"value wrap nil": valueWrap{err: (*codeErr)(nil)},
		"bare":           (*codeErr)(nil),
		"nil":            nil,
	} {
		t.Run(name, func(t *testing.T) {
			got, ok := errchain.As[*codeErr](err)
			assert.False(t, ok)
			assert.Nil(t, got)
			assert.False(t, errchain.Is(err, io.EOF))
			_, ok = errchain.As[net.Error](err)
			assert.False(t, ok)
			// The same tree with a real error behind the typed nils.
			withReal := errors.Join(err, fmt.Errorf("c: %w", real))
			got, ok = errchain.As[*codeErr](withReal)
			require.True(t, ok)
			assert.Same(t, real, got)
		})
	}
}

func TestWalkOrderMatchesErrors(t *testing.T) {
	a, b, c := errors.New("a"), errors.New("b"), errors.New("c")
	tree := fmt.Errorf("top: %w", errors.Join(fmt.Errorf("x: %w", a), multi{b, c}))
	var seen []error
	errchain.Walk(tree, func(e error) bool {
		if e == a || e == b || e == c {
			seen = append(seen, e)
		}
		return false
	})
	assert.Equal(t, []error{a, b, c}, seen)
	assert.True(t, errchain.Is(tree, c))
	assert.Equal(t, errors.Is(tree, c), errchain.Is(tree, c))
}

func TestPanickingMethodsCountAsNoMatch(t *testing.T) {
	err := errors.Join(panicky{}, io.EOF)
	assert.True(t, errchain.Is(err, io.EOF))
	assert.False(t, errchain.Is(panicky{}, io.EOF))
	_, ok := errchain.As[*codeErr](panicky{})
	assert.False(t, ok)
	assert.False(t, errchain.Any(panicky{}, func(e error) bool {
		return e.(interface{ SafeToRetry() bool }).SafeToRetry()
	}))
	assert.NotEmpty(t, errchain.Leaf(panicky{}).Error())
}

func TestCycleEnds(t *testing.T) {
	assert.False(t, errchain.Is(&loop{}, io.EOF))
}

func TestLeafHidesWhatItWraps(t *testing.T) {
	inner := &codeErr{code: 1}
	outer := fmt.Errorf("outer: %w", inner)
	var ce *codeErr
	assert.False(t, errors.As(errchain.Leaf(outer), &ce), "Leaf must not expose the wrapped error")
	require.True(t, errors.As(errchain.Leaf(inner), &ce))
	assert.Same(t, inner, ce)
	assert.True(t, errors.Is(errchain.Leaf(io.EOF), io.EOF))
	assert.Equal(t, "outer: code 1", errchain.Leaf(outer).Error())
	assert.Nil(t, errchain.Leaf(nil))
}
