package txngrpc_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/txnkit/txn"
	"github.com/txnkit/txn/integrations/internal/grpctest"
	"github.com/txnkit/txn/integrations/txngrpc"
	"github.com/txnkit/txn/internal/fakedb"
)

// These tests run the interceptor in a real gRPC server on a loopback
// listener, with the scripted backend of the core's tests. The same over
// PostgreSQL is tested in integrations/servicetest.

const (
	addMethod   = grpctest.AddMethod
	watchMethod = grpctest.WatchMethod
)

var (
	errConflict = fakedb.Err(txn.ClassRetryable, "conflict")
	errBroken   = fakedb.Err(txn.ClassPermanent, "constraint violated")
)

func add(ctx context.Context, conn *grpc.ClientConn, n int64) (int64, error) {
	out := new(wrapperspb.Int64Value)
	err := conn.Invoke(ctx, addMethod, wrapperspb.Int64(n), out)
	return out.GetValue(), err
}

func newRunner(t *testing.T, opts ...txn.RunnerOption) (*fakedb.DB, *txn.Runner[*fakedb.Tx]) {
	t.Helper()
	db := fakedb.New()
	r := txn.New[*fakedb.Tx](db, append([]txn.RunnerOption{txn.WithBackoff(txn.Constant(0))}, opts...)...)
	require.NoError(t, r.Err())
	return db, r
}

type opObserver struct {
	txn.NopObserver
	mu  sync.Mutex
	ops []string
}

func (o *opObserver) AttemptStarted(_ context.Context, e txn.AttemptEvent) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.ops = append(o.ops, e.Operation+" "+e.Key)
}

func TestRetriedCallReturnsTheCommittedReply(t *testing.T) {
	obs := &opObserver{}
	db, r := newRunner(t, txn.WithObserver(obs))
	var calls, events atomic.Int32
	var seen []int64
	c := &grpctest.Counter{Add: func(ctx context.Context, in *wrapperspb.Int64Value) (*wrapperspb.Int64Value, error) {
		n := calls.Add(1)
		seen = append(seen, in.GetValue())
		tx, ok := txn.TxFrom[*fakedb.Tx](ctx)
		require.True(t, ok)
		tx.Write("row")
		require.NoError(t, txn.OnCommit(ctx, func() { events.Add(1) }))
		if n == 1 {
			return wrapperspb.Int64(-1), errConflict
		}
		return wrapperspb.Int64(in.GetValue() * 10 * int64(n)), nil
	}}
	conn := grpctest.Start(t, c, txngrpc.UnaryServerInterceptor(r, txngrpc.Keys(func(_ context.Context, _ string, req any) []string {
		return []string{"counter"}
	})))
	got, err := add(context.Background(), conn, 7)
	require.NoError(t, err)
	assert.Equal(t, int64(140), got, "the reply of the attempt that committed")
	assert.Equal(t, []int64{7, 7}, seen, "every attempt gets the same request")
	assert.Equal(t, int32(1), events.Load())
	assert.Equal(t, 1, db.Committed("row"))
	assert.Equal(t, []string{addMethod + " counter", addMethod + " counter"}, obs.ops)
}

func TestStatusMapping(t *testing.T) {
	cases := []struct {
		name     string
		script   func(db *fakedb.DB)
		err      error
		opts     []txngrpc.Option
		ctx      func() (context.Context, context.CancelFunc)
		backoff  time.Duration
		code     codes.Code
		contains string
		calls    int32
	}{
		{name: "contention gives Aborted", err: errConflict,
			opts: []txngrpc.Option{txngrpc.CallOptions(func(context.Context, string, any) []txn.CallOption { return []txn.CallOption{txn.MaxAttempts(3)} })},
			code: codes.Aborted, contains: "contention", calls: 3},
		{name: "unknown commit gives Unknown", script: func(db *fakedb.DB) { db.FailCommit(fakedb.Err(txn.ClassConnLost, "connection reset")) },
			code: codes.Unknown, contains: "commit outcome unknown", calls: 1},
		{name: "deadline gives DeadlineExceeded", err: errConflict, backoff: time.Hour,
			ctx: func() (context.Context, context.CancelFunc) {
				return context.WithTimeout(context.Background(), time.Minute)
			},
			code: codes.DeadlineExceeded, contains: "before the transaction committed", calls: 1},
		{name: "handler status passes", err: status.Error(codes.NotFound, "no such account"),
			code: codes.NotFound, contains: "no such account", calls: 1},
		{name: "permanent gives Internal", err: errBroken, code: codes.Internal, contains: "internal error", calls: 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			db, r := newRunner(t, txn.WithBackoff(txn.Constant(c.backoff)))
			if c.script != nil {
				c.script(db)
			}
			var calls atomic.Int32
			conn := grpctest.Start(t, &grpctest.Counter{Add: func(ctx context.Context, in *wrapperspb.Int64Value) (*wrapperspb.Int64Value, error) {
				calls.Add(1)
				tx, _ := txn.TxFrom[*fakedb.Tx](ctx)
				tx.Write("row")
				if c.err != nil {
					return nil, c.err
				}
				return in, nil
			}}, txngrpc.UnaryServerInterceptor(r, c.opts...))
			ctx, cancel := context.Background(), context.CancelFunc(func() {})
			if c.ctx != nil {
				ctx, cancel = c.ctx()
			}
			defer cancel()
			_, err := add(ctx, conn, 1)
			st, ok := status.FromError(err)
			require.True(t, ok, "%v", err)
			assert.Equal(t, c.code, st.Code(), st.Message())
			assert.Contains(t, st.Message(), c.contains)
			assert.NotContains(t, st.Message(), "constraint", "the error's text is not sent")
			assert.Equal(t, c.calls, calls.Load())
			if c.script == nil {
				assert.Zero(t, db.Committed("row"))
			}
		})
	}
}

func TestStreamingMethodsPassThrough(t *testing.T) {
	_, r := newRunner(t)
	var calls atomic.Int32
	conn := grpctest.Start(t, &grpctest.Counter{Watch: func(in *wrapperspb.Int64Value, stream grpc.ServerStream) error {
		calls.Add(1)
		_, inTx := txn.TxFrom[*fakedb.Tx](stream.Context())
		assert.False(t, inTx, "a stream runs outside any transaction")
		if err := stream.SendMsg(wrapperspb.Int64(in.GetValue())); err != nil {
			return err
		}
		return status.Error(codes.Unavailable, errConflict.Error()) // would be retried if it were intercepted
	}}, txngrpc.UnaryServerInterceptor(r))
	stream, err := conn.NewStream(context.Background(), grpctest.WatchStream(), watchMethod)
	require.NoError(t, err)
	require.NoError(t, stream.SendMsg(wrapperspb.Int64(3)))
	require.NoError(t, stream.CloseSend())
	out := new(wrapperspb.Int64Value)
	require.NoError(t, stream.RecvMsg(out))
	assert.Equal(t, int64(3), out.GetValue())
	err = stream.RecvMsg(out)
	assert.Equal(t, codes.Unavailable, status.Code(err))
	assert.Equal(t, int32(1), calls.Load())
}

func TestSkipAndErrorMapper(t *testing.T) {
	_, r := newRunner(t)
	inTx := false
	conn := grpctest.Start(t, &grpctest.Counter{Add: func(ctx context.Context, in *wrapperspb.Int64Value) (*wrapperspb.Int64Value, error) {
		_, inTx = txn.TxFrom[*fakedb.Tx](ctx)
		return in, nil
	}}, txngrpc.UnaryServerInterceptor(r, txngrpc.Skip(func(m string) bool { return m == addMethod })))
	_, err := add(context.Background(), conn, 1)
	require.NoError(t, err)
	assert.False(t, inTx)

	conn = grpctest.Start(t, &grpctest.Counter{Add: func(context.Context, *wrapperspb.Int64Value) (*wrapperspb.Int64Value, error) {
		return nil, errBroken
	}}, txngrpc.UnaryServerInterceptor(r, txngrpc.ErrorMapper(func(err error) error {
		return status.Error(codes.FailedPrecondition, err.Error())
	})))
	_, err = add(context.Background(), conn, 1)
	assert.Equal(t, codes.FailedPrecondition, status.Code(err))
	assert.Contains(t, status.Convert(err).Message(), "constraint violated")

	var nilRunner *txn.Runner[*fakedb.Tx]
	conn = grpctest.Start(t, &grpctest.Counter{Add: func(_ context.Context, in *wrapperspb.Int64Value) (*wrapperspb.Int64Value, error) { return in, nil }},
		txngrpc.UnaryServerInterceptor(nilRunner))
	_, err = add(context.Background(), conn, 1)
	assert.Equal(t, codes.Internal, status.Code(err))
}

func TestDefaultErrorMapper(t *testing.T) {
	assert.NoError(t, txngrpc.DefaultErrorMapper(nil))
	gaveUp := &txn.GiveUpError{Reason: context.DeadlineExceeded, Last: errConflict}
	assert.Equal(t, codes.DeadlineExceeded, status.Code(txngrpc.DefaultErrorMapper(gaveUp)))
	gaveUp = &txn.GiveUpError{Reason: context.Canceled, Last: errConflict}
	assert.Equal(t, codes.Canceled, status.Code(txngrpc.DefaultErrorMapper(gaveUp)))
	gaveUp = &txn.GiveUpError{Reason: txn.ErrBudgetExhausted, Last: status.Error(codes.NotFound, "x")}
	assert.Equal(t, codes.Aborted, status.Code(txngrpc.DefaultErrorMapper(gaveUp)))
	assert.Equal(t, codes.Internal, status.Code(txngrpc.DefaultErrorMapper(errors.New("boom"))))
}

// Wiring: one interceptor for every unary method; conflict keys from the
// request message.
func ExampleUnaryServerInterceptor() {
	var r *txn.Runner[*fakedb.Tx] // txnpgx.New(pool), txnsql.New(db, ...), ...
	srv := grpc.NewServer(grpc.ChainUnaryInterceptor(txngrpc.UnaryServerInterceptor(r,
		txngrpc.Keys(func(_ context.Context, _ string, req any) []string {
			if v, ok := req.(*wrapperspb.Int64Value); ok {
				return []string{"account:" + v.String()}
			}
			return nil
		}),
		txngrpc.CallOptions(func(context.Context, string, any) []txn.CallOption {
			return []txn.CallOption{txn.MaxAttempts(5)}
		}),
	)))
	_ = srv
}
