package txnsqlite_test

import (
	"context"
	"database/sql"
	"fmt"
	"math"
	"path/filepath"
	"reflect"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"modernc.org/sqlite"

	"github.com/txnkit/txn"
	"github.com/txnkit/txn/backends/txnsqlite"
	"github.com/txnkit/txn/internal/errchain/errtest"
)

// newSQLiteError builds the driver's error with any code and message.
// modernc.org/sqlite has no constructor for it (its fields are
// unexported), so the fields are set through reflect and unsafe; the
// tests over real errors (TestClassify) check that the classifier reads
// real ones the same way.
func newSQLiteError(code int, msg string) *sqlite.Error {
	e := &sqlite.Error{}
	v := reflect.ValueOf(e).Elem()
	set := func(name string, val any) {
		f := v.FieldByName(name)
		reflect.NewAt(f.Type(), unsafe.Pointer(f.UnsafeAddr())).Elem().Set(reflect.ValueOf(val))
	}
	set("code", code)
	set("msg", msg)
	return e
}

func TestNewSQLiteError(t *testing.T) {
	e := newSQLiteError(517, "database is locked")
	assert.Equal(t, 517, e.Code())
	assert.Equal(t, "database is locked", e.Error())
}

func TestClassifyTypedNilNeverPanics(t *testing.T) {
	tn := (*sqlite.Error)(nil)
	errtest.PermanentWithoutPanic(t, map[string]txn.Classifier{"Classify": txnsqlite.Classify}, []error{tn}, nil)
	busy := newSQLiteError(txnsqlite.CodeBusy, "database is locked")
	errtest.LooksPast(t, txnsqlite.Classify, tn, busy, txn.ClassRetryable)
}

// TestRunWithTypedNilErrorIsPermanent returns a wrapped typed nil
// *sqlite.Error from fn on a real database: Run returns it after one
// attempt, without panicking.
func TestRunWithTypedNilErrorIsPermanent(t *testing.T) {
	db, err := txnsqlite.Open(filepath.Join(t.TempDir(), "typednil.db"))
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	r := txnsqlite.New(db, txn.MaxAttempts(3))
	calls := 0
	require.NotPanics(t, func() {
		err = r.Run(context.Background(), func(context.Context, *sql.Tx) error {
			calls++
			return fmt.Errorf("fn: %w", (*sqlite.Error)(nil))
		})
	})
	require.Error(t, err)
	assert.Equal(t, 1, calls)
}

func TestClassifyCodeOutOfRange(t *testing.T) {
	for _, code := range []int{-1, -251, -(1 << 8) + 5, math.MinInt, math.MaxInt, 1<<32 | 5, math.MaxInt32 + 6} {
		assert.Equal(t, txn.ClassPermanent, txnsqlite.ClassifyCode(code), "code %d", code)
	}
	assert.Equal(t, txn.ClassRetryable, txnsqlite.ClassifyCode(txnsqlite.CodeProtocol))
	assert.Equal(t, txn.ClassPermanent, txnsqlite.ClassifyCode(14), "SQLITE_CANTOPEN")
	assert.Equal(t, txn.ClassPermanent, txnsqlite.ClassifyCode(14|1<<8), "SQLITE_CANTOPEN_NOTEMPDIR")
}

// FuzzClassify feeds Classify driver errors with fuzzed codes and
// messages, wrapped to a fuzzed depth and joined with typed nils.
// Properties: no panic; Classify of an *sqlite.Error is ClassifyCode of
// its code; wrapping, errors.Join and a type with Unwrap() []error do not
// change the class; a typed nil alone, however wrapped, is permanent;
// only codes whose low byte is SQLITE_BUSY, SQLITE_LOCKED or
// SQLITE_PROTOCOL are ever retryable.
func FuzzClassify(f *testing.F) {
	for _, code := range []int{0, 1, 5, 6, 14, 15, 19, 261, 262, 517, 773, 1555, 2067, -1, -251, math.MaxInt32, math.MaxInt, math.MinInt} {
		f.Add(code, "database is locked", uint8(1), false)
	}
	f.Add(5, "", uint8(0), true)
	f.Fuzz(func(t *testing.T, code int, msg string, depth uint8, typedNil bool) {
		var base error = newSQLiteError(code, msg)
		if typedNil {
			base = (*sqlite.Error)(nil)
		}
		d := int(depth % 32)
		tn := (*sqlite.Error)(nil)

		c := errtest.Invariant(t, txnsqlite.Classify, base, tn, d)
		if typedNil {
			assert.Equal(t, txn.ClassPermanent, c)
		} else {
			assert.Equal(t, txnsqlite.ClassifyCode(code), c)
		}
		if c == txn.ClassRetryable {
			low := code & 0xff
			assert.True(t, code >= 0 && (low == 5 || low == 6 || low == 15), "code %d retryable", code)
		} else {
			assert.Equal(t, txn.ClassPermanent, c)
		}
	})
}

// TestCantOpenIsPermanent runs on a database file in a directory that does
// not exist: the connect fails with SQLITE_CANTOPEN, which Classify leaves
// permanent (a missing directory or a permission does not fix itself), so
// Run returns after one attempt without running fn.
func TestCantOpenIsPermanent(t *testing.T) {
	db, err := sql.Open("sqlite", filepath.Join(t.TempDir(), "missing", "x.db"))
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	rec := &recorder{}
	r := txnsqlite.New(db, txn.MaxAttempts(3), txn.WithObserver(rec))
	calls := 0
	err = r.Run(context.Background(), func(context.Context, *sql.Tx) error { calls++; return nil })
	require.Error(t, err)
	var se *sqlite.Error
	require.ErrorAs(t, err, &se)
	assert.Equal(t, 14, se.Code()&0xff, "SQLITE_CANTOPEN: %v", err)
	assert.Equal(t, txn.ClassPermanent, txnsqlite.Classify(err))
	assert.Zero(t, calls)
	assert.Empty(t, rec.codes(), "no retry")
}
