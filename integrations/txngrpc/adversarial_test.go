package txngrpc_test

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
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/txnkit/txn"
	"github.com/txnkit/txn/integrations/internal/grpctest"
	"github.com/txnkit/txn/integrations/txngrpc"
	"github.com/txnkit/txn/internal/fakedb"
)

// These tests try to make the interceptor answer wrongly with methods that
// misbehave across attempts: they turn a retryable error into a status,
// change the request message, set response metadata in an attempt that is
// retried, or outlive their client. Whatever the method does, the client
// must get the reply or status of the attempt that decided, nothing of a
// retried attempt, and OnCommit work must happen once.

// finished is an outer interceptor that closes done when the interceptors
// and the method inside it have returned.
func finished() (grpc.UnaryServerInterceptor, <-chan struct{}) {
	done := make(chan struct{})
	var once sync.Once
	return func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		defer once.Do(func() { close(done) })
		return h(ctx, req)
	}, done
}

func waitDone(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatalf("hang: %s", what)
	}
}

func TestAdversarialStatusAfterRetryableError(t *testing.T) {
	db, r := newRunner(t)
	var calls, events atomic.Int32
	conn := grpctest.Start(t, &grpctest.Counter{Add: func(ctx context.Context, in *wrapperspb.Int64Value) (*wrapperspb.Int64Value, error) {
		n := calls.Add(1)
		tx, _ := txn.TxFrom[*fakedb.Tx](ctx)
		tx.Write("row")
		assert.NoError(t, txn.OnCommit(ctx, func() { events.Add(1) }))
		if n == 1 {
			return wrapperspb.Int64(111), errConflict // a reply with the error: dropped
		}
		return wrapperspb.Int64(222), status.Error(codes.FailedPrecondition, "insufficient funds")
	}}, txngrpc.UnaryServerInterceptor(r))
	got, err := add(context.Background(), conn, 1)
	assert.Equal(t, codes.FailedPrecondition, status.Code(err))
	assert.Equal(t, "insufficient funds", status.Convert(err).Message())
	assert.Zero(t, got, "no reply with an error status")
	assert.Equal(t, int32(2), calls.Load())
	assert.Zero(t, events.Load())
	assert.Zero(t, db.Committed("row"), "a status rolls back")
}

// TestAdversarialRetryableErrorHiddenInAStatusStillRetries: the method
// runs a nested Run that loses a race and answers with a status of its
// own, losing the retryable error: the attempt is doomed anyway, so the
// call is retried and the status of the lost attempt never reaches the
// client.
func TestAdversarialRetryableErrorHiddenInAStatusStillRetries(t *testing.T) {
	db, r := newRunner(t)
	var calls, events atomic.Int32
	conn := grpctest.Start(t, &grpctest.Counter{Add: func(ctx context.Context, in *wrapperspb.Int64Value) (*wrapperspb.Int64Value, error) {
		n := calls.Add(1)
		assert.NoError(t, txn.OnCommit(ctx, func() { events.Add(1) }))
		err := r.Run(ctx, func(ctx context.Context, tx *fakedb.Tx) error {
			tx.Write("row")
			if n == 1 {
				return errConflict
			}
			return nil
		})
		if err != nil {
			return nil, status.Error(codes.Internal, "repository failed")
		}
		return wrapperspb.Int64(in.GetValue() + 1), nil
	}}, txngrpc.UnaryServerInterceptor(r))
	got, err := add(context.Background(), conn, 1)
	require.NoError(t, err)
	assert.Equal(t, int64(2), got)
	assert.Equal(t, int32(2), calls.Load())
	assert.Equal(t, int32(1), events.Load())
	assert.Equal(t, 1, db.Committed("row"))
}

// TestAdversarialRequestChangedByARetriedAttempt: a method that normalises
// or fills in its request in place and is then retried sees, in the retry,
// the client's request, not its own change (as HTTP's middleware replays
// the body from the start).
func TestAdversarialRequestChangedByARetriedAttempt(t *testing.T) {
	db, r := newRunner(t)
	var seen []int64
	conn := grpctest.Start(t, &grpctest.Counter{Add: func(ctx context.Context, in *wrapperspb.Int64Value) (*wrapperspb.Int64Value, error) {
		seen = append(seen, in.GetValue())
		tx, _ := txn.TxFrom[*fakedb.Tx](ctx)
		tx.Write("row")
		in.Value += 100 // applies a fee in place
		if len(seen) == 1 {
			return nil, errConflict
		}
		return in, nil
	}}, txngrpc.UnaryServerInterceptor(r))
	got, err := add(context.Background(), conn, 7)
	require.NoError(t, err)
	assert.Equal(t, []int64{7, 7}, seen, "every attempt sees the client's request")
	assert.Equal(t, int64(107), got)
	assert.Equal(t, 1, db.Committed("row"))
}

// TestAdversarialMetadataOfARetriedAttemptDoesNotLeak: headers and
// trailers set with grpc.SetHeader and grpc.SetTrailer by an attempt that
// is retried are that attempt's response, like its reply.
func TestAdversarialMetadataOfARetriedAttemptDoesNotLeak(t *testing.T) {
	db, r := newRunner(t)
	var calls atomic.Int32
	conn := grpctest.Start(t, &grpctest.Counter{Add: func(ctx context.Context, in *wrapperspb.Int64Value) (*wrapperspb.Int64Value, error) {
		n := calls.Add(1)
		a := string(rune('0' + n))
		tx, _ := txn.TxFrom[*fakedb.Tx](ctx)
		tx.Write("row")
		assert.NoError(t, grpc.SetHeader(ctx, metadata.Pairs("attempt", a, "created-id", "id-"+a)))
		assert.NoError(t, grpc.SetTrailer(ctx, metadata.Pairs("attempt", a)))
		if n == 1 {
			return nil, errConflict
		}
		return in, nil
	}}, txngrpc.UnaryServerInterceptor(r))
	var header, trailer metadata.MD
	out := new(wrapperspb.Int64Value)
	err := conn.Invoke(context.Background(), addMethod, wrapperspb.Int64(1), out, grpc.Header(&header), grpc.Trailer(&trailer))
	require.NoError(t, err)
	assert.Equal(t, []string{"2"}, header.Get("attempt"))
	assert.Equal(t, []string{"id-2"}, header.Get("created-id"))
	assert.Equal(t, []string{"2"}, trailer.Get("attempt"))
	assert.Equal(t, int32(2), calls.Load())
	assert.Equal(t, 1, db.Committed("row"))
}

func TestAdversarialClientCancelsMidRetry(t *testing.T) {
	for name, leaveIn := range map[string]int32{"during the retry": 2, "before the retry": 1} {
		t.Run(name, func(t *testing.T) {
			db, r := newRunner(t)
			var calls, events atomic.Int32
			inAttempt := make(chan int32, 2)
			outer, done := finished()
			conn := grpctest.Start(t, &grpctest.Counter{Add: func(ctx context.Context, in *wrapperspb.Int64Value) (*wrapperspb.Int64Value, error) {
				n := calls.Add(1)
				tx, _ := txn.TxFrom[*fakedb.Tx](ctx)
				tx.Write("row")
				assert.NoError(t, txn.OnCommit(ctx, func() { events.Add(1) }))
				inAttempt <- n
				if n == leaveIn {
					<-ctx.Done() // the client cancels here
				}
				if n == 1 {
					return nil, errConflict
				}
				return in, nil // ignores the cancellation
			}}, outer, txngrpc.UnaryServerInterceptor(r))
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			go func() {
				for n := range inAttempt {
					if n == leaveIn {
						cancel()
						return
					}
				}
			}()
			_, err := add(ctx, conn, 1)
			assert.Equal(t, codes.Canceled, status.Code(err))
			waitDone(t, done, "interceptor after the client left")
			assert.Equal(t, leaveIn, calls.Load(), "no attempt after the client left")
			assert.Zero(t, db.Committed("row"), "no commit after the client left")
			assert.Zero(t, events.Load())
		})
	}
}

// TestAdversarialDeadlineDuringTheRetry: the client's deadline passes while
// the retry runs; the method ignores it and succeeds, yet nothing commits.
func TestAdversarialDeadlineDuringTheRetry(t *testing.T) {
	db, r := newRunner(t)
	var calls, events atomic.Int32
	outer, done := finished()
	conn := grpctest.Start(t, &grpctest.Counter{Add: func(ctx context.Context, in *wrapperspb.Int64Value) (*wrapperspb.Int64Value, error) {
		n := calls.Add(1)
		tx, _ := txn.TxFrom[*fakedb.Tx](ctx)
		tx.Write("row")
		assert.NoError(t, txn.OnCommit(ctx, func() { events.Add(1) }))
		if n == 1 {
			return nil, errConflict
		}
		<-ctx.Done()
		return in, nil
	}}, outer, txngrpc.UnaryServerInterceptor(r))
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := add(ctx, conn, 1)
	assert.Equal(t, codes.DeadlineExceeded, status.Code(err))
	waitDone(t, done, "interceptor after the deadline")
	assert.Equal(t, int32(2), calls.Load())
	assert.Zero(t, db.Committed("row"))
	assert.Zero(t, events.Load())
}

// TestAdversarialSentHeaderEndsTheCall: an attempt sends its response
// headers (grpc.SendHeader) and then fails with a retryable error. The
// client has those headers and a call has one response, so the method is
// not run again: the call ends with codes.Aborted, nothing committed, and
// the client saw the headers the attempt sent.
func TestAdversarialSentHeaderEndsTheCall(t *testing.T) {
	db, r := newRunner(t)
	var calls atomic.Int32
	conn := grpctest.Start(t, &grpctest.Counter{Add: func(ctx context.Context, in *wrapperspb.Int64Value) (*wrapperspb.Int64Value, error) {
		calls.Add(1)
		tx, _ := txn.TxFrom[*fakedb.Tx](ctx)
		tx.Write("row")
		require.NoError(t, grpc.SendHeader(ctx, metadata.Pairs("sent-by", "attempt 1")))
		return nil, errConflict
	}}, txngrpc.UnaryServerInterceptor(r))
	var header metadata.MD
	out := &wrapperspb.Int64Value{}
	err := conn.Invoke(context.Background(), grpctest.AddMethod, wrapperspb.Int64(1), out, grpc.Header(&header))
	require.Error(t, err)
	assert.Equal(t, codes.Aborted, status.Code(err), "%v", err)
	assert.Equal(t, int32(1), calls.Load(), "not run again after its headers were sent")
	assert.Zero(t, db.Committed("row"))
	assert.Equal(t, []string{"attempt 1"}, header.Get("sent-by"))
}
