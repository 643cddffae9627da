package txnsql_test

import (
	"database/sql/driver"
	"errors"
	"fmt"
	"net"
	"os"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/txnkit/txn"
	"github.com/txnkit/txn/backends/txnsql"
)

// multiErr is an error type of its own with Unwrap() []error.
type multiErr []error

func (m multiErr) Error() string   { return fmt.Sprintf("%d errors", len(m)) }
func (m multiErr) Unwrap() []error { return m }

// typedNils have Unwrap methods that read their receiver: errors.Is
// panics walking through them.
var typedNils = []error{
	(*net.OpError)(nil),
	(*os.PathError)(nil),
	(*os.SyscallError)(nil),
}

// wrapN wraps err depth times with %w.
func wrapN(err error, depth int) error {
	for i := range depth {
		err = fmt.Errorf("wrap %d: %w", i, err)
	}
	return err
}

func TestClassifyTypedNilNeverPanics(t *testing.T) {
	for _, tn := range typedNils {
		t.Run(fmt.Sprintf("%T", tn), func(t *testing.T) {
			require.NotPanics(t, func() {
				assert.Equal(t, txn.ClassPermanent, txnsql.Classify(tn))
				assert.Equal(t, txn.ClassPermanent, txnsql.Classify(fmt.Errorf("fn: %w", tn)))
				assert.Equal(t, txn.ClassPermanent, txnsql.Classify(errors.Join(errors.New("x"), tn)))
				assert.Equal(t, txn.ClassConnLost, txnsql.Classify(errors.Join(tn, driver.ErrBadConn)))
				assert.Equal(t, txn.ClassConnLost, txnsql.Classify(multiErr{tn, fmt.Errorf("q: %w", driver.ErrBadConn)}))
			})
		})
	}
}

// FuzzClassify feeds Classify, the classifier of a txnsql Runner
// built without one, driver.ErrBadConn and other errors, wrapped to a
// fuzzed depth and joined with typed nils. Properties: no panic; only
// driver.ErrBadConn in the chain is a lost connection; wrapping and
// joining do not change the class; a typed nil alone is permanent.
func FuzzClassify(f *testing.F) {
	f.Add(true, "", uint8(0), uint8(0))
	f.Add(false, "driver: bad connection", uint8(3), uint8(1))
	f.Add(false, "", uint8(31), uint8(2))
	f.Fuzz(func(t *testing.T, badConn bool, msg string, depth, shape uint8) {
		var base error = errors.New(msg)
		if badConn {
			base = driver.ErrBadConn
		}
		tn := typedNils[int(shape)%len(typedNils)]
		d := int(depth % 32)
		want := txn.ClassPermanent
		if badConn {
			want = txn.ClassConnLost
		}
		assert.Equal(t, want, txnsql.Classify(base))
		assert.Equal(t, want, txnsql.Classify(wrapN(base, d)))
		assert.Equal(t, want, txnsql.Classify(errors.Join(wrapN(tn, d), base)))
		assert.Equal(t, want, txnsql.Classify(multiErr{tn, wrapN(base, d), tn}))
		assert.Equal(t, txn.ClassPermanent, txnsql.Classify(wrapN(tn, d)))
	})
}
