package txn_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/txnkit/txn"
)

// TestTypedNilInFnErrorNeverPanics: fn's error may wrap a typed nil (a nil
// *net.OpError, say), whose methods panic on a nil receiver. Run must look
// for its Retry and Permanent marks, and build its give-up message, without
// calling them.
func TestTypedNilInFnErrorNeverPanics(t *testing.T) {
	nilOp := (*net.OpError)(nil)
	cases := map[string]error{
		"wrapped":        fmt.Errorf("x: %w", nilOp),
		"joined":         errors.Join(errors.New("a"), nilOp),
		"marked retry":   txn.Retry(fmt.Errorf("x: %w", nilOp)),
		"wrapped marked": fmt.Errorf("y: %w", txn.Permanent(fmt.Errorf("x: %w", nilOp))),
	}
	for name, fnErr := range cases {
		t.Run(name, func(t *testing.T) {
			r := txn.New[int](intBackend{}, txn.MaxAttempts(2), txn.WithBackoff(txn.Constant(0)))
			var err error
			require.NotPanics(t, func() {
				err = r.Run(context.Background(), func(context.Context, int) error { return fnErr })
			})
			require.Error(t, err)
			_ = err.Error()
		})
	}
}
