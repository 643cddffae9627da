// Package errchain walks error trees the way errors.Is and errors.As do,
// but safely for classifiers that must accept any error: a typed nil
// pointer in the tree (a (*pgconn.PgError)(nil) wrapped with %w, say) is
// skipped instead of having its methods called, a method that panics
// counts as no match, and a cyclic or absurdly deep tree is cut off
// instead of walked forever.
//
// errors.As would hand a classifier the nil pointer (and a classifier
// that reads a field of it panics), and errors.As and errors.Is
// themselves panic when they call Unwrap, Is or As on a nil pointer of a
// type whose method dereferences its receiver (every value-receiver
// method, such as mongo.CommandError's Unwrap).
package errchain

import (
	"reflect"
)

// MaxNodes bounds how many errors Walk visits in one tree. No real error
// chain comes near it; a cyclic Unwrap would otherwise never end.
const MaxNodes = 1 << 16

// Walk calls visit for the errors of err's tree in the order errors.Is and
// errors.As visit them (depth first, a node before what it wraps, the
// errors of Unwrap() []error left to right) until visit returns true.
// Nil errors and typed nils (an error interface holding a nil pointer,
// map, slice, channel or function) are skipped: neither visit nor any of
// their methods is called, and they wrap nothing. An Unwrap method that
// panics counts as wrapping nothing. Walk reports whether
// visit returned true; it stops, reporting false, after MaxNodes errors.
func Walk(err error, visit func(error) bool) bool {
	stack := []error{err}
	for n := 0; len(stack) > 0 && n < MaxNodes; n++ {
		e := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if IsNil(e) {
			continue
		}
		if visit(e) {
			return true
		}
		switch u := e.(type) {
		case interface{ Unwrap() error }:
			var next error
			if call(func() { next = u.Unwrap() }) {
				stack = append(stack, next)
			}
		case interface{ Unwrap() []error }:
			var next []error
			if call(func() { next = u.Unwrap() }) {
				for i := len(next) - 1; i >= 0; i-- {
					stack = append(stack, next[i])
				}
			}
		}
	}
	return false
}

// As returns the first error of err's tree that is a T, or whose As method
// fills a T, as errors.As would find it, skipping typed nil pointers (see
// Walk). T may be a pointer type (*pgconn.PgError) or an interface type
// (net.Error). The T returned with true is never nil; with false it is
// T's zero value.
func As[T any](err error) (T, bool) {
	var found T
	ok := Walk(err, func(e error) bool {
		if t, ok := e.(T); ok {
			found = t
			return true
		}
		if x, ok := e.(interface{ As(any) bool }); ok {
			var t T
			var matched bool
			if call(func() { matched = x.As(&t) }) && matched && !IsNil(t) {
				found = t
				return true
			}
		}
		return false
	})
	if !ok {
		var zero T
		return zero, false
	}
	return found, true
}

// Is reports whether err's tree holds an error equal to target or whose Is
// method matches target, as errors.Is does, skipping typed nil pointers
// (see Walk). A nil target matches nothing.
func Is(err, target error) bool {
	if target == nil {
		return false
	}
	comparable := reflect.TypeOf(target).Comparable()
	return Walk(err, func(e error) bool {
		var equal bool
		if comparable && reflect.TypeOf(e) == reflect.TypeOf(target) &&
			call(func() { equal = e == target }) && equal {
			return true
		}
		if x, ok := e.(interface{ Is(error) bool }); ok {
			var matched bool
			return call(func() { matched = x.Is(target) }) && matched
		}
		return false
	})
}

// Any reports whether pred holds for an error of err's tree (see Walk).
// pred receives each error as Leaf(e), so that a helper of a driver that
// walks the chain itself with errors.As (pgconn.Timeout, say) looks at
// that one error and never at the typed nils it may wrap. A pred that
// panics counts as false.
func Any(err error, pred func(error) bool) bool {
	return Walk(err, func(e error) bool {
		var ok bool
		return call(func() { ok = pred(Leaf(e)) }) && ok
	})
}

// Leaf returns an error that stands for e alone: it has e's message, it
// wraps nothing, and errors.As on it finds e (by type, or through e's own
// As method) and nothing behind e. Leaf(nil) is nil.
func Leaf(e error) error {
	if e == nil {
		return nil
	}
	return leaf{e}
}

type leaf struct{ err error }

func (l leaf) Error() string {
	var s string
	if !call(func() { s = l.err.Error() }) {
		return "<error whose Error method panics>"
	}
	return s
}

// As implements the single step of errors.As on the wrapped error.
func (l leaf) As(target any) bool {
	v := reflect.ValueOf(target)
	if v.Kind() != reflect.Pointer || v.IsNil() {
		return false
	}
	dst := v.Elem()
	if reflect.TypeOf(l.err).AssignableTo(dst.Type()) {
		dst.Set(reflect.ValueOf(l.err))
		return true
	}
	if x, ok := l.err.(interface{ As(any) bool }); ok {
		var matched bool
		return call(func() { matched = x.As(target) }) && matched
	}
	return false
}

// Is implements the single step of errors.Is on the wrapped error.
func (l leaf) Is(target error) bool {
	if target == nil {
		return false
	}
	var equal bool
	if reflect.TypeOf(target).Comparable() && reflect.TypeOf(l.err) == reflect.TypeOf(target) &&
		call(func() { equal = l.err == target }) && equal {
		return true
	}
	if x, ok := l.err.(interface{ Is(error) bool }); ok {
		var matched bool
		return call(func() { matched = x.Is(target) }) && matched
	}
	return false
}

// IsNil reports whether v is nil or holds a nil pointer, map, slice,
// channel or function.
func IsNil(v any) bool {
	if v == nil {
		return true
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Pointer, reflect.UnsafePointer, reflect.Map, reflect.Slice, reflect.Chan, reflect.Func, reflect.Interface:
		return rv.IsNil()
	}
	return false
}

// call runs f and reports whether it returned without panicking.
func call(f func()) (ok bool) {
	defer func() {
		if recover() != nil {
			ok = false
		}
	}()
	f()
	return true
}
