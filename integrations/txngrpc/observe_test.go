package txngrpc_test

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/txnkit/txn"
	"github.com/txnkit/txn/integrations/internal/grpctest"
	"github.com/txnkit/txn/integrations/txngrpc"
	"github.com/txnkit/txn/internal/integrationtest"
)

// TestEveryEventOfACallCarriesItsMethod: the attempts, retries, commit and
// give-ups of a call, retried and committed, or Aborted after the attempt
// limit, all carry the full method name.
func TestEveryEventOfACallCarriesItsMethod(t *testing.T) {
	o := &integrationtest.OpsRecorder{}
	_, r := newRunner(t, txn.WithObserver(o))
	var fail atomic.Int32
	fail.Store(1)
	conn := grpctest.Start(t, &grpctest.Counter{Add: func(ctx context.Context, in *wrapperspb.Int64Value) (*wrapperspb.Int64Value, error) {
		if fail.Add(-1) >= 0 {
			return nil, errConflict
		}
		return in, nil
	}}, txngrpc.UnaryServerInterceptor(r, txngrpc.CallOptions(func(context.Context, string, any) []txn.CallOption {
		return []txn.CallOption{txn.MaxAttempts(2)}
	})))
	_, err := add(context.Background(), conn, 1)
	require.NoError(t, err)
	assert.Equal(t, "attempt 1, retry retryable, attempt 2, committed", o.String())
	fail.Store(5)
	o.Reset()
	_, err = add(context.Background(), conn, 1)
	assert.Equal(t, codes.Aborted, status.Code(err))
	assert.Equal(t, "attempt 1, retry retryable, attempt 2, gave up retryable", o.String())
	ops := o.Take()
	assert.Len(t, ops, 8)
	for i, op := range ops {
		assert.Equal(t, addMethod, op, "event %d", i)
	}
}
