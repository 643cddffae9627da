package faultproxy

import (
	"io"
	"net"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// greeter is a server that, like MySQL's, speaks first: it sends greeting
// on every connection, then echoes. It returns its address and a counter
// of the connections it accepted.
func greeter(t *testing.T, greeting string) (string, *atomic.Int64) {
	t.Helper()
	var accepted atomic.Int64
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			go func() {
				defer c.Close()
				if _, err := c.Write([]byte(greeting)); err != nil {
					return
				}
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String(), &accepted
}

// expectReset connects to p and asserts that the connection is reset,
// either while connecting (on loopback the RST can beat connect's return)
// or on a read, after at most a prefix of greeting.
func expectReset(t *testing.T, p *Proxy, greeting string) {
	t.Helper()
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		assert.ErrorIs(t, err, syscall.ECONNRESET)
		return
	}
	defer c.Close()
	require.NoError(t, c.SetReadDeadline(time.Now().Add(5*time.Second)))
	got, err := io.ReadAll(c)
	assert.True(t, strings.HasPrefix(greeting, string(got)), "read %q", got)
	assert.ErrorIs(t, err, syscall.ECONNRESET)
}

func TestResetOnAccept(t *testing.T) {
	target, accepted := greeter(t, "hello")
	p := startProxy(t, target)
	p.SetConnectFault(ResetOnAccept)
	expectReset(t, p, "")
	expectReset(t, p, "")
	assert.Equal(t, 2, p.ConnectResets())
	assert.Zero(t, accepted.Load(), "the target must not be dialed")

	p.SetConnectFault(ConnectPass)
	c := dial(t, p)
	got := make([]byte, len("hello"))
	require.NoError(t, c.SetReadDeadline(time.Now().Add(5*time.Second)))
	_, err := io.ReadFull(c, got)
	require.NoError(t, err)
	assert.Equal(t, "hello", string(got))
	roundTrip(t, c, "still relayed")
	assert.Equal(t, 2, p.ConnectResets())
}

func TestResetAfterGreeting(t *testing.T) {
	target, accepted := greeter(t, "hello")
	p := startProxy(t, target)
	p.SetConnectFault(ResetAfterGreeting)
	expectReset(t, p, "hello")
	assert.Equal(t, 1, p.ConnectResets(), "counted before the reset")
	assert.Equal(t, int64(1), accepted.Load(), "the target is dialed and greets")
}

func TestStartAtOpensARefusingAddress(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())

	_, err = net.Dial("tcp", addr)
	require.ErrorIs(t, err, syscall.ECONNREFUSED)

	target, _ := greeter(t, "hi")
	p, err := StartAt(addr, target)
	require.NoError(t, err)
	t.Cleanup(func() { _ = p.Close() })
	assert.Equal(t, addr, p.Addr())
	c := dial(t, p)
	got := make([]byte, 2)
	require.NoError(t, c.SetReadDeadline(time.Now().Add(5*time.Second)))
	_, err = io.ReadFull(c, got)
	require.NoError(t, err)
	assert.Equal(t, "hi", string(got))
}
