package txnsql_test

import (
	"database/sql/driver"
	"errors"
	"fmt"
	"net"
	"os"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/txnkit/txn"
	"github.com/txnkit/txn/backends/txnsql"
	"github.com/txnkit/txn/internal/errchain/errtest"
)

// typedNils have Unwrap methods that read their receiver: errors.Is
// panics walking through them.
var typedNils = []error{
	(*net.OpError)(nil),
	(*os.PathError)(nil),
	(*os.SyscallError)(nil),
}

func TestClassifyTypedNilNeverPanics(t *testing.T) {
	errtest.PermanentWithoutPanic(t, map[string]txn.Classifier{"Classify": txnsql.Classify}, typedNils, nil)
	for _, tn := range typedNils {
		t.Run(fmt.Sprintf("%T", tn), func(t *testing.T) {
			errtest.LooksPast(t, txnsql.Classify, tn, driver.ErrBadConn, txn.ClassConnLost)
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
		assert.Equal(t, want, errtest.Invariant(t, txnsql.Classify, base, tn, d))
	})
}
