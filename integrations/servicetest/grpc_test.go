package servicetest

import (
	"context"
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
	"github.com/txnkit/txn/backends/txnpgx"
	"github.com/txnkit/txn/integrations/internal/grpctest"
	"github.com/txnkit/txn/integrations/txngrpc"
	"github.com/txnkit/txn/internal/faultproxy"
	"github.com/txnkit/txn/internal/integrationtest"
)

const (
	addMethod   = grpctest.AddMethod
	watchMethod = grpctest.WatchMethod
)

// grpcPair calls Add twice at once; each call's first attempt reads the
// counter and waits for the other before it writes: a real 40001.
func grpcPair(t *testing.T, s store, opts ...txngrpc.Option) (replies [2]int64, errs [2]error, attempts, events int32) {
	t.Helper()
	var (
		att, ev atomic.Int32
		mu      sync.Mutex
		first   = map[int64]bool{}
		bar     = integrationtest.NewBarrier(2)
	)
	c := &grpctest.Counter{Add: func(ctx context.Context, in *wrapperspb.Int64Value) (*wrapperspb.Int64Value, error) {
		att.Add(1)
		v, err := s.read(ctx)
		if err != nil {
			return nil, err
		}
		mu.Lock()
		isFirst := !first[in.GetValue()]
		first[in.GetValue()] = true
		mu.Unlock()
		if isFirst {
			if err := bar.WaitFor(waitLimit); err != nil {
				return nil, txn.Permanent(err)
			}
		}
		if err := s.audit(ctx); err != nil {
			return nil, err
		}
		if err := s.incr(ctx); err != nil {
			return nil, err
		}
		if err := txn.OnCommit(ctx, func() { ev.Add(1) }); err != nil {
			return nil, err
		}
		return wrapperspb.Int64(v + 1), nil
	}}
	conn := grpctest.Start(t, c, s.unary(opts...))
	ctx, cancel := context.WithTimeout(context.Background(), 2*waitLimit)
	defer cancel()
	var wg sync.WaitGroup
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out := new(wrapperspb.Int64Value)
			errs[i] = conn.Invoke(ctx, addMethod, wrapperspb.Int64(int64(i)), out)
			replies[i] = out.GetValue()
		}()
	}
	wg.Wait()
	return replies, errs, att.Load(), ev.Load()
}

func TestGRPCRealConflict(t *testing.T) {
	s := pgStore(t)
	s.retries.take()
	replies, errs, attempts, events := grpcPair(t, s)
	require.NoError(t, errs[0])
	require.NoError(t, errs[1])
	requireRealConflict(t, s)
	assert.Equal(t, int32(3), attempts, "one call ran again after 40001")
	assert.ElementsMatch(t, []int64{1, 2}, replies[:], "each reply is that of the attempt that committed")
	assert.Equal(t, int32(2), events, "OnCommit once per call")
	c, a := s.state()
	assert.Equal(t, int64(2), c)
	assert.Equal(t, int64(2), a, "the audit row of the failed attempt was rolled back with it")

	// With one attempt allowed, the loser gets Aborted.
	_, errs, attempts, events = grpcPair(t, s, txngrpc.CallOptions(func(context.Context, string, any) []txn.CallOption {
		return []txn.CallOption{txn.MaxAttempts(1)}
	}))
	got := []codes.Code{status.Code(errs[0]), status.Code(errs[1])}
	assert.ElementsMatch(t, []codes.Code{codes.OK, codes.Aborted}, got)
	for _, err := range errs {
		if err != nil {
			assert.Contains(t, status.Convert(err).Message(), "contention")
		}
	}
	assert.Equal(t, int32(2), attempts)
	assert.Equal(t, int32(1), events)
	c, a = s.state()
	assert.Equal(t, int64(3), c)
	assert.Equal(t, int64(3), a)
}

func TestGRPCStreamingPassesThrough(t *testing.T) {
	s := pgStore(t)
	var calls atomic.Int32
	conn := grpctest.Start(t, &grpctest.Counter{Watch: func(in *wrapperspb.Int64Value, stream grpc.ServerStream) error {
		calls.Add(1)
		if _, err := txnpgx.Tx(stream.Context()); err == nil {
			return status.Error(codes.Internal, "a stream ran inside a transaction")
		}
		v, err := s.read(stream.Context()) // no transaction: the helper refuses
		if err == nil {
			return status.Errorf(codes.Internal, "read %d outside a transaction", v)
		}
		if err := stream.SendMsg(wrapperspb.Int64(in.GetValue())); err != nil {
			return err
		}
		return status.Error(codes.Unavailable, "stream ended") // not retried
	}}, s.unary())
	stream, err := conn.NewStream(context.Background(), grpctest.WatchStream(), watchMethod)
	require.NoError(t, err)
	require.NoError(t, stream.SendMsg(wrapperspb.Int64(5)))
	require.NoError(t, stream.CloseSend())
	out := new(wrapperspb.Int64Value)
	require.NoError(t, stream.RecvMsg(out))
	assert.Equal(t, int64(5), out.GetValue())
	assert.Equal(t, codes.Unavailable, status.Code(stream.RecvMsg(out)))
	assert.Equal(t, int32(1), calls.Load())
}

func TestGRPCRealCommitOutcomeUnknown(t *testing.T) {
	pool, proxy := proxiedPGPool(t)
	s := pgStoreOn(t, pool)
	var calls atomic.Int32
	conn := grpctest.Start(t, &grpctest.Counter{Add: func(ctx context.Context, in *wrapperspb.Int64Value) (*wrapperspb.Int64Value, error) {
		calls.Add(1)
		return in, s.incr(ctx)
	}}, s.unary())
	proxy.Arm([]byte("commit"), faultproxy.CutAfterReply)
	err := conn.Invoke(context.Background(), addMethod, wrapperspb.Int64(1), new(wrapperspb.Int64Value))
	st := status.Convert(err)
	assert.Equal(t, codes.Unknown, st.Code(), st.Message())
	assert.Contains(t, st.Message(), "commit outcome unknown")
	assert.Equal(t, int32(1), calls.Load(), "never re-run after an unknown outcome")
	c, _ := s.state()
	assert.Equal(t, int64(1), c, "the commit did happen")
}

func TestGRPCRealDeadline(t *testing.T) {
	pool := pgPool(t, nil)
	s := pgStoreOn(t, pool)
	// Another transaction holds the counter's row lock.
	holder, err := pool.Begin(context.Background())
	require.NoError(t, err)
	defer func() { _ = holder.Rollback(context.Background()) }()
	_, err = holder.Exec(context.Background(), "UPDATE "+s.counter+" SET v = v WHERE id = 1")
	require.NoError(t, err)

	// The server gives each call a deadline much shorter than the client's,
	// so that the status the client gets is the interceptor's.
	serverDeadline := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		ctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		defer cancel()
		return h(ctx, req)
	}
	var calls atomic.Int32
	conn := grpctest.Start(t, &grpctest.Counter{Add: func(ctx context.Context, in *wrapperspb.Int64Value) (*wrapperspb.Int64Value, error) {
		calls.Add(1)
		if err := s.audit(ctx); err != nil {
			return nil, err
		}
		return in, s.incr(ctx) // waits for the lock until the deadline
	}}, serverDeadline, s.unary())

	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	err = conn.Invoke(ctx, addMethod, wrapperspb.Int64(1), new(wrapperspb.Int64Value))
	st := status.Convert(err)
	assert.Equal(t, codes.DeadlineExceeded, st.Code(), st.Message())
	assert.Contains(t, st.Message(), "before the transaction committed", "the interceptor's status, not the client's own deadline")
	require.NoError(t, holder.Rollback(context.Background()))
	c, a := s.state()
	assert.Equal(t, int64(0), c)
	assert.Equal(t, int64(0), a, "the audit row was rolled back")
}
