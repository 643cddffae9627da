// Package txngrpc runs a unary gRPC method inside a txn transaction and
// runs it again, in a new transaction, when the transaction loses a race:
//
//	r := txnpgx.New(pool)
//	srv := grpc.NewServer(grpc.ChainUnaryInterceptor(txngrpc.UnaryServerInterceptor(r)))
//
// The handler's context carries the transaction (txn.TxFrom, txnpgx.Tx,
// txnsql.Tx return it; txn.OnCommit registers work for after the commit).
// The handler returns its error as usual: a retryable one (serialization
// failure, deadlock, txn.Retry) makes the interceptor roll back and call the
// handler again with the request as the client sent it (a proto.Message is
// cloned from a copy taken before the first attempt, so a handler that
// changes its request in place does not pass the change on); the reply of
// the attempt that committed is the one sent. Header and trailer metadata
// the handler sets (grpc.SetHeader, grpc.SetTrailer) belong to its
// attempt: only the last attempt's reach the client, with its reply or
// its error. grpc.SendHeader sends at once, so a call whose attempt sent
// its headers is not run again: it ends with codes.Aborted if its
// transaction must be retried. OnCommit callbacks run after the commit,
// before the reply leaves. Each Run is named (txn.Operation) by the method's
// full name, such as "/bank.v1.Bank/Transfer", for observers, logs and
// metrics.
//
// Streaming methods are not intercepted: a stream's messages have left or
// been consumed by the time an error shows, so they cannot be replayed. A
// streaming handler runs as it would without txngrpc, once.
//
// Errors map to status codes through a replaceable mapper (ErrorMapper);
// DefaultErrorMapper returns:
//   - codes.Aborted when Run gave up under contention (attempt limit,
//     elapsed limit, retry budget): the request was valid and may be sent
//     again, which is what Aborted means in gRPC ("typically due to a
//     concurrency issue such as a transaction abort");
//   - codes.Unknown with a message saying the outcome is unknown when the
//     commit's outcome is unknown (txn.ErrCommitUnknown);
//   - codes.DeadlineExceeded or codes.Canceled when the call's context
//     ended before the commit (nothing was committed);
//   - the handler's own status when it returned one (status.Error) and
//     nothing above applies;
//   - codes.Internal, without the error's text, for any other error.
//
// The package's own tests use a scripted backend over a real loopback gRPC
// server; the tests of the module integrations/servicetest run it against
// PostgreSQL with real serialization failures.
package txngrpc

import (
	"context"
	"errors"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/txnkit/txn"
)

// Option configures UnaryServerInterceptor.
type Option func(*settings)

type settings struct {
	skip        func(fullMethod string) bool
	keys        func(ctx context.Context, fullMethod string, req any) []string
	callOptions func(ctx context.Context, fullMethod string, req any) []txn.CallOption
	mapErr      func(error) error
}

// Skip leaves the methods for which skip returns true out: they run
// without a transaction and without retry. A nil skip is ignored.
func Skip(skip func(fullMethod string) bool) Option {
	return func(s *settings) { s.skip = skip }
}

// Keys takes the conflict keys of each call (txn.Keys) from its request
// message: calls naming a common key run their attempts one at a time.
// Returning no key sets none. A nil keys is ignored.
func Keys(keys func(ctx context.Context, fullMethod string, req any) []string) Option {
	return func(s *settings) { s.keys = keys }
}

// CallOptions adds txn call options per call (txn.MaxAttempts,
// txn.MaxElapsed, txn.Idempotent, ...); begin options (an isolation level)
// are not call options: give UnaryServerInterceptor a view of the Runner,
// r.WithBegin(...). They come after the
// interceptor's own (operation name, keys), so they may override them. A
// nil opts is ignored.
func CallOptions(opts func(ctx context.Context, fullMethod string, req any) []txn.CallOption) Option {
	return func(s *settings) { s.callOptions = opts }
}

// ErrorMapper replaces DefaultErrorMapper: m receives every non-nil error of
// a Run and returns the error the client gets (normally a status.Error). A
// nil m is ignored.
func ErrorMapper(m func(error) error) Option {
	return func(s *settings) {
		if m != nil {
			s.mapErr = m
		}
	}
}

// UnaryServerInterceptor returns an interceptor that runs every unary
// method (not left out by Skip) in a transaction of r, as the package
// documentation describes. A nil or misconfigured r makes every call fail
// with codes.Internal.
func UnaryServerInterceptor[T any](r *txn.Runner[T], opts ...Option) grpc.UnaryServerInterceptor {
	s := settings{mapErr: DefaultErrorMapper}
	for _, o := range opts {
		if o != nil {
			o(&s)
		}
	}
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if s.skip != nil && s.skip(info.FullMethod) {
			return handler(ctx, req)
		}
		callOpts := []txn.CallOption{txn.Operation(info.FullMethod)}
		if s.keys != nil {
			if keys := s.keys(ctx, info.FullMethod, req); len(keys) > 0 {
				callOpts = append(callOpts, txn.Keys(keys...))
			}
		}
		if s.callOptions != nil {
			callOpts = append(callOpts, s.callOptions(ctx, info.FullMethod, req)...)
		}
		call := newCall(ctx, req)
		resp, err := txn.Do(ctx, r, func(ctx context.Context, _ T) (any, error) {
			return call.attempt(ctx, handler)
		}, callOpts...)
		call.finish()
		if err != nil {
			return nil, s.mapErr(err)
		}
		return resp, nil
	}
}

// errHeaderSent stops a call whose transaction must run again after an
// attempt sent its response headers (grpc.SendHeader): the client has
// them, and a call has one response.
var errHeaderSent = status.Error(codes.Aborted,
	"txngrpc: the transaction must run again, but an earlier attempt already sent its response headers; nothing was changed, the call may be retried")

// call is one intercepted unary call across its attempts. Every attempt
// gets the request as the client sent it (a proto.Message is cloned from a
// copy kept before the first attempt, so that a handler that changes its
// request in place does not hand the change to the next attempt), and a
// grpc.ServerTransportStream of its own, which keeps the header and
// trailer metadata the handler sets (grpc.SetHeader, grpc.SetTrailer):
// only the last attempt's reach the client, with its reply or its error.
type call struct {
	stream   grpc.ServerTransportStream // the call's, nil outside a server
	req      any                        // the client's request
	pristine proto.Message              // a copy of req, nil if req is not a proto.Message
	ran      bool                       // an attempt has run
	last     *attemptStream             // the last attempt's, nil outside a server
}

func newCall(ctx context.Context, req any) *call {
	c := &call{stream: grpc.ServerTransportStreamFromContext(ctx), req: req}
	if m, ok := req.(proto.Message); ok && m != nil {
		c.pristine = proto.Clone(m)
	}
	return c
}

// attempt runs the handler once.
func (c *call) attempt(ctx context.Context, handler grpc.UnaryHandler) (any, error) {
	if prev := c.last; prev != nil {
		prev.mu.Lock()
		prev.done = true
		sent := prev.sent
		prev.mu.Unlock()
		if sent {
			return nil, txn.Permanent(errHeaderSent)
		}
	}
	req := c.req
	if c.ran && c.pristine != nil {
		req = proto.Clone(c.pristine)
	}
	c.ran = true
	if c.stream == nil {
		return handler(ctx, req)
	}
	as := &attemptStream{ServerTransportStream: c.stream}
	c.last = as
	return handler(grpc.NewContextWithServerTransportStream(ctx, as), req)
}

// finish passes the last attempt's header and trailer metadata on to the
// call's stream.
func (c *call) finish() {
	if c.last == nil {
		return
	}
	as := c.last
	as.mu.Lock()
	defer as.mu.Unlock()
	as.done = true
	if len(as.header) > 0 && !as.sent {
		_ = c.stream.SetHeader(as.header)
	}
	if len(as.trailer) > 0 {
		_ = c.stream.SetTrailer(as.trailer)
	}
}

// attemptStream is the grpc.ServerTransportStream of one attempt. It keeps
// the metadata the handler sets until the call's interceptor passes the
// last attempt's on; SendHeader sends at once (the attempt's headers and
// the call's are then the client's), after which the call cannot run
// again. Once the attempt is over, every method fails.
type attemptStream struct {
	grpc.ServerTransportStream
	mu              sync.Mutex
	header, trailer metadata.MD
	sent, done      bool
}

// SetHeader keeps md for the attempt's response header.
func (s *attemptStream) SetHeader(md metadata.MD) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done || s.sent {
		return errAttemptOver(s.done)
	}
	s.header = metadata.Join(s.header, md)
	return nil
}

// SendHeader sends the attempt's header, with md, at once.
func (s *attemptStream) SendHeader(md metadata.MD) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done || s.sent {
		return errAttemptOver(s.done)
	}
	s.sent = true
	return s.ServerTransportStream.SendHeader(metadata.Join(s.header, md))
}

// SetTrailer keeps md for the attempt's trailer.
func (s *attemptStream) SetTrailer(md metadata.MD) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done {
		return errAttemptOver(true)
	}
	s.trailer = metadata.Join(s.trailer, md)
	return nil
}

// errAttemptOver is the error of a metadata call the attempt can no longer
// make: it is over, or its header was sent.
func errAttemptOver(over bool) error {
	if over {
		return status.Error(codes.Internal, "txngrpc: the attempt is over")
	}
	return status.Error(codes.Internal, "txngrpc: the header was already sent")
}

// DefaultErrorMapper maps an error of Run to the status the package
// documentation lists. It returns nil for nil.
func DefaultErrorMapper(err error) error {
	if err == nil {
		return nil
	}
	var gu *txn.GiveUpError
	switch {
	case errors.Is(err, txn.ErrCommitUnknown):
		return status.Error(codes.Unknown, "txn: commit outcome unknown: the call may or may not have taken effect; check before repeating it")
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, "txn: deadline exceeded before the transaction committed; nothing was changed")
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, "txn: call canceled before the transaction committed; nothing was changed")
	case errors.Is(err, txn.ErrAttemptsExhausted), errors.Is(err, txn.ErrElapsedExhausted), errors.Is(err, txn.ErrBudgetExhausted):
		return status.Error(codes.Aborted, "txn: transaction aborted by contention, retried and gave up; nothing was changed, the call may be retried")
	case errors.As(err, &gu):
		// Another reason to stop (a panic-free give-up the table above
		// does not name): never let the last error's own status through.
		return status.Error(codes.Internal, "internal error")
	}
	if st, ok := status.FromError(err); ok {
		return st.Err()
	}
	return status.Error(codes.Internal, "internal error")
}
