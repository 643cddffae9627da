// Package grpctest is the gRPC service the tests of txngrpc and
// servicetest serve through the interceptor: a hand-written Counter (no
// generated code) with a unary Add and a server-streaming Watch, taking
// and returning Int64Value, on a loopback listener.
//
// It is a module of its own so that both modules' tests share it without
// the core module importing gRPC; nothing outside the tests imports it.
package grpctest

import (
	"context"
	"net"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// The full method names of the Counter service.
const (
	AddMethod   = "/grpctest.Counter/Add"
	WatchMethod = "/grpctest.Counter/Watch"
)

// Counter implements the service with its two functions; a test sets the
// one it calls.
type Counter struct {
	Add   func(ctx context.Context, in *wrapperspb.Int64Value) (*wrapperspb.Int64Value, error)
	Watch func(in *wrapperspb.Int64Value, stream grpc.ServerStream) error
}

// WatchStream is the stream description of Watch, for
// grpc.ClientConn.NewStream.
func WatchStream() *grpc.StreamDesc { return &serviceDesc().Streams[0] }

// serviceDesc describes the Counter service to grpc.
func serviceDesc() *grpc.ServiceDesc {
	return &grpc.ServiceDesc{
		ServiceName: "grpctest.Counter",
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{{MethodName: "Add", Handler: func(srv any, ctx context.Context, dec func(any) error, icpt grpc.UnaryServerInterceptor) (any, error) {
			in := new(wrapperspb.Int64Value)
			if err := dec(in); err != nil {
				return nil, err
			}
			c := srv.(*Counter)
			if icpt == nil {
				return c.Add(ctx, in)
			}
			return icpt(ctx, in, &grpc.UnaryServerInfo{Server: srv, FullMethod: AddMethod}, func(ctx context.Context, req any) (any, error) {
				return c.Add(ctx, req.(*wrapperspb.Int64Value))
			})
		}}},
		Streams: []grpc.StreamDesc{{StreamName: "Watch", ServerStreams: true, Handler: func(srv any, stream grpc.ServerStream) error {
			in := new(wrapperspb.Int64Value)
			if err := stream.RecvMsg(in); err != nil {
				return err
			}
			return srv.(*Counter).Watch(in, stream)
		}}},
	}
}

// Start serves c with the unary interceptors icpts, chained, on a loopback
// port and returns a client connection to it. Server and connection are closed when
// t ends.
func Start(t testing.TB, c *Counter, icpts ...grpc.UnaryServerInterceptor) *grpc.ClientConn {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := grpc.NewServer(grpc.ChainUnaryInterceptor(icpts...))
	srv.RegisterService(serviceDesc(), c)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient("passthrough:///"+lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}
