// Package faulttest holds the connect-failure scaffolding the backends'
// tests share: an address where nothing listens, the proxy's connect
// faults by name, and an observer that changes the network while Run
// retries.
package faulttest

import (
	"context"
	"net"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/txnkit/txn"
	"github.com/txnkit/txn/internal/faultproxy"
)

// ClosedAddr returns a loopback address where nothing listens: connecting
// to it is refused.
func ClosedAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

// ConnectFaults returns the proxy's connect faults that reset a new
// connection, by name.
func ConnectFaults() map[string]faultproxy.ConnectFault {
	return map[string]faultproxy.ConnectFault{
		"reset on accept":      faultproxy.ResetOnAccept,
		"reset after greeting": faultproxy.ResetAfterGreeting,
	}
}

// OnRetry is a txn.Observer that records every retry and calls F, if not
// nil, with it in Run's goroutine before the backoff sleep starts.
type OnRetry struct {
	txn.NopObserver
	F func(e txn.RetryEvent, retry int)

	mu     sync.Mutex
	events []txn.RetryEvent
}

// RetryScheduled records e and calls F with e and the number of retries
// scheduled so far, e's included. (e.Attempt counts the runs of fn, which a
// BEGIN that could not reach the database does not add to.)
func (o *OnRetry) RetryScheduled(_ context.Context, e txn.RetryEvent) {
	o.mu.Lock()
	o.events = append(o.events, e)
	n := len(o.events)
	o.mu.Unlock()
	if o.F != nil {
		o.F(e, n)
	}
}

// Retries returns the retries recorded so far.
func (o *OnRetry) Retries() []txn.RetryEvent {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]txn.RetryEvent(nil), o.events...)
}

// ListenOnRetry returns an observer that, when retry number retry is
// scheduled, starts a proxy listening on addr (until then an address that
// refuses connections) and forwarding to target. The proxy is closed when
// t ends.
func ListenOnRetry(t testing.TB, retry int, addr, target string) *OnRetry {
	var mu sync.Mutex
	var proxy *faultproxy.Proxy
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		if proxy != nil {
			_ = proxy.Close()
		}
	})
	return &OnRetry{F: func(_ txn.RetryEvent, n int) {
		if n == retry {
			p, err := faultproxy.StartAt(addr, target)
			if assert.NoError(t, err) {
				mu.Lock()
				proxy = p
				mu.Unlock()
			}
		}
	}}
}

// FaultyProxy starts a proxy to target that meets every new connection
// with fault. The proxy is closed when t ends.
func FaultyProxy(t testing.TB, target string, fault faultproxy.ConnectFault) *faultproxy.Proxy {
	t.Helper()
	p, err := faultproxy.Start(target)
	require.NoError(t, err)
	t.Cleanup(func() { _ = p.Close() })
	p.SetConnectFault(fault)
	return p
}

// PassOnRetry returns an observer that lets p relay new connections
// normally from the moment retry number retry is scheduled.
func PassOnRetry(p *faultproxy.Proxy, retry int) *OnRetry {
	return &OnRetry{F: func(_ txn.RetryEvent, n int) {
		if n == retry {
			p.SetConnectFault(faultproxy.ConnectPass)
		}
	}}
}
