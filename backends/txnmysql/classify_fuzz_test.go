package txnmysql_test

import (
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"testing"

	"github.com/go-sql-driver/mysql"
	"github.com/stretchr/testify/assert"

	"github.com/txnkit/txn"
	"github.com/txnkit/txn/backends/txnmysql"
	"github.com/txnkit/txn/internal/errchain/errtest"
)

// typedNils are nil pointers of error types the driver and the net
// package return. errors.As hands out a nil *MySQLError; errors.Is and
// errors.As panic walking through a nil *net.OpError (its Unwrap reads
// the receiver).
var typedNils = []error{
	(*mysql.MySQLError)(nil),
	(*net.OpError)(nil),
	(*net.DNSError)(nil),
}

// classifiers are every classifier the package exports, with every opt-in.
func classifiers() map[string]txn.Classifier {
	return map[string]txn.Classifier{
		"Classify":   txnmysql.Classify,
		"Classifier": txnmysql.Classifier(txnmysql.ClassifyOptions{LockWaitNowait: true, StatementTimeout: true}),
	}
}

func TestClassifyTypedNilNeverPanics(t *testing.T) {
	errtest.PermanentWithoutPanic(t, classifiers(), typedNils, nil)
}

func TestClassifyLooksPastTypedNils(t *testing.T) {
	deadlock := &mysql.MySQLError{Number: 1213, Message: "Deadlock found when trying to get lock"}
	for _, tn := range typedNils {
		t.Run(fmt.Sprintf("%T", tn), func(t *testing.T) {
			errtest.LooksPast(t, txnmysql.Classify, tn, deadlock, txn.ClassRetryable)
			errtest.LooksPast(t, txnmysql.Classify, tn, mysql.ErrInvalidConn, txn.ClassConnLost)
		})
	}
}

// TestClassifyConnectErrors classifies, as values, the errors the driver
// returns while connecting and while the server restarts (the real
// connects are in TestConnectFailuresAreConnectionLost).
func TestClassifyConnectErrors(t *testing.T) {
	for name, tc := range map[string]struct {
		err  error
		want txn.Class
	}{
		"dial refused":            {&net.OpError{Op: "dial", Net: "tcp", Err: &net.AddrError{Err: "x"}}, txn.ClassConnLost},
		"dial reset":              {&net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNRESET}, txn.ClassConnLost},
		"read reset":              {fmt.Errorf("exec: %w", &net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}), txn.ClassConnLost},
		"bad connection":          {errors.New("bad connection"), txn.ClassConnLost},
		"bad connection, else":    {errors.New("bad connection!"), txn.ClassPermanent},
		"too many connections":    {&mysql.MySQLError{Number: 1040, Message: "Too many connections"}, txn.ClassConnLost},
		"server shutdown":         {&mysql.MySQLError{Number: 1053, Message: "Server shutdown in progress"}, txn.ClassConnLost},
		"inactivity":              {&mysql.MySQLError{Number: 4031}, txn.ClassConnLost},
		"access denied":           {&mysql.MySQLError{Number: 1045, Message: "Access denied"}, txn.ClassPermanent},
		"unknown database":        {&mysql.MySQLError{Number: 1049}, txn.ClassPermanent},
		"EOF is not the driver's": {io.EOF, txn.ClassPermanent},
	} {
		t.Run(name, func(t *testing.T) {
			assert.Equal(t, tc.want, txnmysql.Classify(tc.err))
			assert.Equal(t, tc.want, txnmysql.Classify(fmt.Errorf("begin: %w", tc.err)))
		})
	}
}

// fuzzBase builds the error a fuzz input describes.
func fuzzBase(kind uint8, number uint16, msg string) error {
	switch kind % 8 {
	case 0:
		return &mysql.MySQLError{Number: number, Message: msg}
	case 1:
		return &mysql.MySQLError{Number: number, SQLState: [5]byte{'4', '0', '0', '0', '1'}, Message: msg}
	case 2:
		return &net.OpError{Op: msg, Net: "tcp", Err: syscall.Errno(number)}
	case 3:
		return mysql.ErrInvalidConn
	case 4:
		return driver.ErrBadConn
	case 5:
		return errors.New(msg)
	case 6:
		return &net.OpError{Op: "dial", Err: (*net.DNSError)(nil)}
	default:
		return typedNils[int(number)%len(typedNils)]
	}
}

// FuzzClassify feeds Classify and Classifier server errors with fuzzed
// numbers and messages, connection errors and typed nils, wrapped to a
// fuzzed depth and joined with typed nils. Properties: no panic; a known
// Class; wrapping, errors.Join and a type with Unwrap() []error do not
// change the class; a typed nil alone, however wrapped, is permanent; the
// options only turn permanent errors retryable.
func FuzzClassify(f *testing.F) {
	for _, n := range []uint16{0, 1, 149, 1020, 1040, 1047, 1053, 1062, 1205, 1213, 1927, 1969, 3024, 3101, 3572, 4031, 8002, 8022, 8028, 9007, 65535} {
		f.Add(uint8(0), n, "", uint8(1), uint8(0))
	}
	f.Add(uint8(0), uint16(1047), "WSREP has not yet prepared node for application use", uint8(2), uint8(1))
	f.Add(uint8(1), uint16(1047), "wsrep HAS NOT YET PREPARED NODE", uint8(0), uint8(2))
	f.Add(uint8(5), uint16(0), "bad connection", uint8(3), uint8(0))
	for kind := uint8(2); kind < 8; kind++ {
		f.Add(kind, uint16(kind), "msg", kind, kind)
	}
	all := txnmysql.Classifier(txnmysql.ClassifyOptions{LockWaitNowait: true, StatementTimeout: true})
	f.Fuzz(func(t *testing.T, kind uint8, number uint16, msg string, depth, shape uint8) {
		base := fuzzBase(kind, number, msg)
		tn := typedNils[int(shape)%len(typedNils)]
		d := int(depth % 32)

		errtest.WithOptions(t, txnmysql.Classify, all, base, tn, d)
	})
}
