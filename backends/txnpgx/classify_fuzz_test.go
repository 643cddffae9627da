package txnpgx_test

import (
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/txnkit/txn"
	"github.com/txnkit/txn/backends/txnpgx"
	"github.com/txnkit/txn/internal/errchain/errtest"
)

// typedNils are nil pointers of error types pgx and the net package
// return. errors.As hands the first out as a nil *PgError; the next two
// have Unwrap methods that dereference their receiver, so errors.As and
// errors.Is panic walking through them.
var typedNils = []error{
	(*pgconn.PgError)(nil),
	(*pgconn.ConnectError)(nil),
	(*net.OpError)(nil),
	(*pgconn.PrepareError)(nil),
}

func TestClassifyTypedNilNeverPanics(t *testing.T) {
	all := txnpgx.Classifier(txnpgx.ClassifyOptions{LockNotAvailable: true, QueryCanceled: true})
	errtest.PermanentWithoutPanic(t, map[string]txn.Classifier{"Classify": txnpgx.Classify, "Classifier": all}, typedNils, func(tn error) map[string]error {
		return map[string]error{"joined wrapped": fmt.Errorf("fn: %w", errors.Join(tn, fmt.Errorf("x: %w", tn)))}
	})
}

func TestClassifyLooksPastTypedNils(t *testing.T) {
	deadlock := &pgconn.PgError{Code: "40P01"}
	for _, tn := range typedNils {
		t.Run(fmt.Sprintf("%T", tn), func(t *testing.T) {
			errtest.LooksPast(t, txnpgx.Classify, tn, deadlock, txn.ClassRetryable)
			errtest.LooksPast(t, txnpgx.Classify, tn, io.ErrUnexpectedEOF, txn.ClassConnLost)
		})
	}
}

// fuzzBase builds the error a fuzz input describes.
func fuzzBase(kind uint8, code, msg string) error {
	switch kind % 8 {
	case 0:
		return &pgconn.PgError{Code: code, Message: msg}
	case 1:
		return &pgconn.PgError{Code: code, Message: msg, Severity: msg, Detail: msg}
	case 2:
		return &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	case 3:
		return &net.OpError{Op: msg, Err: errors.New(msg)}
	case 4:
		return io.EOF
	case 5:
		return errors.New(msg)
	case 6:
		return &pgconn.ConnectError{}
	default:
		return typedNils[int(len(code)+len(msg))%len(typedNils)]
	}
}

// FuzzClassify feeds Classify and Classifier server errors with fuzzed
// SQLSTATEs and messages, connection errors and typed nils, wrapped to a
// fuzzed depth and joined with typed nils. Properties: no panic; a known
// Class; wrapping, errors.Join and a type with Unwrap() []error do not
// change the class; a typed nil alone, however wrapped, is permanent; the
// options only turn permanent errors retryable.
func FuzzClassify(f *testing.F) {
	for _, code := range []string{"40001", "40P01", "CR000", "YB003", "XX000", "25P03", "40003", "08007", "08006", "08P01", "08", "0", "57P01", "57P05", "55P03", "57014", "23505", ""} {
		f.Add(uint8(0), code, "", uint8(1), uint8(0))
	}
	f.Add(uint8(0), "XX000", "Restart read required", uint8(3), uint8(1))
	f.Add(uint8(1), "XX000", "Operation failed. Try again.", uint8(0), uint8(2))
	for kind := uint8(2); kind < 8; kind++ {
		f.Add(kind, "", "msg", kind, kind)
	}
	all := txnpgx.Classifier(txnpgx.ClassifyOptions{LockNotAvailable: true, QueryCanceled: true})
	f.Fuzz(func(t *testing.T, kind uint8, code, msg string, depth, shape uint8) {
		base := fuzzBase(kind, code, msg)
		tn := typedNils[int(shape)%len(typedNils)]
		d := int(depth % 32)

		errtest.WithOptions(t, txnpgx.Classify, all, base, tn, d)
	})
}
