package txngrpc_test

import (
	"context"
	"sync"
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
	"github.com/txnkit/txn/txntest"
)

// eventOps is a txntest.Recorder that also keeps the Operation of every
// event.
type eventOps struct {
	txntest.Recorder
	mu  sync.Mutex
	ops []string
}

func (o *eventOps) add(op string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.ops = append(o.ops, op)
}

func (o *eventOps) AttemptStarted(ctx context.Context, e txn.AttemptEvent) {
	o.add(e.Operation)
	o.Recorder.AttemptStarted(ctx, e)
}

func (o *eventOps) RetryScheduled(ctx context.Context, e txn.RetryEvent) {
	o.add(e.Operation)
	o.Recorder.RetryScheduled(ctx, e)
}

func (o *eventOps) GaveUp(ctx context.Context, e txn.GiveUpEvent) {
	o.add(e.Operation)
	o.Recorder.GaveUp(ctx, e)
}

func (o *eventOps) Committed(ctx context.Context, e txn.CommitEvent) {
	o.add(e.Operation)
	o.Recorder.Committed(ctx, e)
}

// TestEveryEventOfACallCarriesItsMethod: the attempts, retries, commit and
// give-ups of a call, retried and committed, or Aborted after the attempt
// limit, all carry the full method name.
func TestEveryEventOfACallCarriesItsMethod(t *testing.T) {
	o := &eventOps{}
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
	o.mu.Lock()
	defer o.mu.Unlock()
	assert.Len(t, o.ops, 8)
	for i, op := range o.ops {
		assert.Equal(t, addMethod, op, "event %d", i)
	}
}
