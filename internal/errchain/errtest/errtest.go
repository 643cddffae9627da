// Package errtest holds what the classifier tests of every backend share:
// error trees of the shapes a classifier must look through (wrapping to
// any depth, errors.Join, a type of its own with Unwrap() []error, typed
// nil pointers anywhere), and the properties that hold for every
// classifier over them.
package errtest

import (
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/txnkit/txn"
)

// Multi is an error type of its own with Unwrap() []error, as opposed to
// the one errors.Join builds.
type Multi []error

// Error returns how many errors m holds.
func (m Multi) Error() string { return fmt.Sprintf("%d errors", len(m)) }

// Unwrap returns m's errors.
func (m Multi) Unwrap() []error { return m }

// WrapN wraps err depth times with %w.
func WrapN(err error, depth int) error {
	for i := range depth {
		err = fmt.Errorf("wrap %d: %w", i, err)
	}
	return err
}

// Shapes returns tn (a typed nil, say) bare, wrapped once and twice,
// joined behind another error, and twice in a Multi, by name.
func Shapes(tn error) map[string]error {
	return map[string]error{
		"bare":          tn,
		"wrapped":       fmt.Errorf("fn: %w", tn),
		"wrapped twice": WrapN(tn, 2),
		"joined":        errors.Join(errors.New("other"), tn),
		"multi":         Multi{tn, tn},
	}
}

// PermanentWithoutPanic runs a subtest per typed nil of tns and per shape
// of it (Shapes, plus what more returns for it, if more is not nil), in
// which every classifier of classifiers, by name, must return
// txn.ClassPermanent without panicking.
func PermanentWithoutPanic(t *testing.T, classifiers map[string]txn.Classifier, tns []error, more func(tn error) map[string]error) {
	for _, tn := range tns {
		shapes := Shapes(tn)
		if more != nil {
			for name, err := range more(tn) {
				shapes[name] = err
			}
		}
		for name, err := range shapes {
			t.Run(fmt.Sprintf("%T/%s", tn, name), func(t *testing.T) {
				for cname, classify := range classifiers {
					require.NotPanics(t, func() {
						assert.Equal(t, txn.ClassPermanent, classify(err), cname)
					}, cname)
				}
			})
		}
	}
}

// LooksPast asserts, without panicking, that classify finds err past the
// typed nil tn: in errors.Join(tn, err) and in a Multi of both, each
// wrapped, it returns want.
func LooksPast(t testing.TB, classify txn.Classifier, tn, err error, want txn.Class) {
	t.Helper()
	require.NotPanics(t, func() {
		assert.Equal(t, want, classify(errors.Join(tn, err)), "joined behind a typed nil: %v", err)
		assert.Equal(t, want, classify(Multi{fmt.Errorf("a: %w", tn), fmt.Errorf("b: %w", err)}), "in a Multi after a typed nil: %v", err)
	})
}

// Invariant checks the properties every classifier has over the trees
// built from base and the typed nil tn, depth deep, and returns
// classify(base): a known Class; wrapping, a typed nil joined ahead or
// behind, and a Multi around base do not change the class; a typed nil
// alone, however wrapped, and typed nils joined, are permanent.
func Invariant(t testing.TB, classify txn.Classifier, base, tn error, depth int) txn.Class {
	t.Helper()
	c := classify(base)
	require.LessOrEqual(t, c, txn.ClassConnLost, "unknown class")
	assert.Equal(t, c, classify(WrapN(base, depth)), "wrapping")
	assert.Equal(t, c, classify(errors.Join(WrapN(tn, depth), base)), "typed nil joined ahead")
	assert.Equal(t, c, classify(errors.Join(base, tn)), "typed nil joined behind")
	assert.Equal(t, c, classify(Multi{tn, WrapN(base, depth), tn}), "Unwrap() []error")
	assert.Equal(t, txn.ClassPermanent, classify(WrapN(tn, depth)), "a typed nil is not an error to retry")
	assert.Equal(t, txn.ClassPermanent, classify(errors.Join(tn, WrapN(tn, depth))), "typed nils joined")
	return c
}

// WithOptions checks Invariant for classify and, for all (the same
// classifier with every opt-in turned on), that typed nils with a nil among
// them are permanent, that the opt-ins change only what classify leaves
// permanent, and that wrapping does not change all's class. It returns
// classify(base).
func WithOptions(t testing.TB, classify, all txn.Classifier, base, tn error, depth int) txn.Class {
	t.Helper()
	c := Invariant(t, classify, base, tn, depth)
	assert.Equal(t, txn.ClassPermanent, all(Multi{tn, nil, WrapN(tn, depth)}), "typed nils and a nil")
	if c != txn.ClassPermanent {
		assert.Equal(t, c, all(base), "options change only permanent errors")
	}
	assert.Equal(t, all(base), all(WrapN(base, depth)), "wrapping, with the options")
	return c
}
