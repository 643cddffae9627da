package faultproxy

import (
	"bytes"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// echoServer echoes every byte back and records what it received.
type echoServer struct {
	ln  net.Listener
	wg  sync.WaitGroup
	mu  sync.Mutex
	got bytes.Buffer
	// conns lets Close end handlers blocked in Read.
	conns []net.Conn
}

func newEchoServer(t *testing.T) *echoServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	s := &echoServer{ln: ln}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns = append(s.conns, c)
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer c.Close()
				buf := make([]byte, 4096)
				for {
					n, err := c.Read(buf)
					if n > 0 {
						s.mu.Lock()
						s.got.Write(buf[:n])
						s.mu.Unlock()
						if _, err := c.Write(buf[:n]); err != nil {
							return
						}
					}
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		s.mu.Lock()
		for _, c := range s.conns {
			_ = c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
	return s
}

func (s *echoServer) received() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.got.String()
}

// waitReceived waits until the server has received want in total.
func (s *echoServer) waitReceived(t *testing.T, want string) {
	t.Helper()
	require.Eventually(t, func() bool { return s.received() == want }, 5*time.Second, time.Millisecond,
		"the server did not receive %q", want)
}

func startProxy(t *testing.T, target string) *Proxy {
	t.Helper()
	p, err := Start(target)
	require.NoError(t, err)
	t.Cleanup(func() { _ = p.Close() })
	return p
}

func dial(t *testing.T, p *Proxy) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", p.Addr())
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// roundTrip writes msg and reads the echo.
func roundTrip(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	_, err := c.Write([]byte(msg))
	require.NoError(t, err, "write %q", msg)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	got := make([]byte, len(msg))
	_, err = io.ReadFull(c, got)
	require.NoError(t, err, "read echo of %q", msg)
	require.Equal(t, msg, string(got), "echo")
}

// expectClosed asserts that c yields no more bytes and ends.
func expectClosed(t *testing.T, c net.Conn) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(c)
	var ne net.Error
	require.False(t, errors.As(err, &ne) && ne.Timeout(), "connection still open")
	require.Empty(t, b, "client received bytes after the cut")
}

func waitFired(t *testing.T, p *Proxy) {
	t.Helper()
	select {
	case <-p.Fired():
	case <-time.After(5 * time.Second):
		require.FailNow(t, "fault did not fire")
	}
}

// echoBehindProxy starts an echo server and a proxy in front of it.
func echoBehindProxy(t *testing.T) (*echoServer, *Proxy) {
	t.Helper()
	s := newEchoServer(t)
	return s, startProxy(t, s.ln.Addr().String())
}

// sendAndExpectCut writes msg, which must trip the armed fault, and asserts
// that the fault fires and that c is closed without receiving anything.
func sendAndExpectCut(t *testing.T, p *Proxy, c net.Conn, msg string) {
	t.Helper()
	_, err := c.Write([]byte(msg))
	require.NoError(t, err)
	waitFired(t, p)
	expectClosed(t, c)
}

// beginThenCut connects through a proxy to an echo server, round-trips
// "begin;", arms pattern with mode and sends msg, which must trip the fault
// and cut the connection.
func beginThenCut(t *testing.T, pattern string, mode Mode, msg string) (*echoServer, *Proxy) {
	t.Helper()
	s, p := echoBehindProxy(t)
	c := dial(t, p)
	roundTrip(t, c, "begin;")
	p.Arm([]byte(pattern), mode)
	sendAndExpectCut(t, p, c, msg)
	return s, p
}

// twoConns dials p twice and round-trips "a" on the first connection and
// "b" on the second.
func twoConns(t *testing.T, p *Proxy) (net.Conn, net.Conn) {
	t.Helper()
	c1, c2 := dial(t, p), dial(t, p)
	roundTrip(t, c1, "a")
	roundTrip(t, c2, "b")
	return c1, c2
}

func wantFires(t *testing.T, p *Proxy, want int) {
	t.Helper()
	require.Equal(t, want, p.Fires(), "Fires")
}

func TestForwardsBothWays(t *testing.T) {
	s, p := echoBehindProxy(t)
	c := dial(t, p)
	roundTrip(t, c, "hello")
	big := string(bytes.Repeat([]byte("0123456789"), 10000))
	roundTrip(t, c, big)
	require.Equal(t, "hello"+big, s.received(), "what the server received")
	wantFires(t, p, 0)
}

func TestCutBeforeForward(t *testing.T) {
	s, p := beginThenCut(t, "commit", CutBeforeForward, "x COMMIT;")
	require.Equal(t, "begin;", s.received(), "the matching chunk must not be forwarded")
	wantFires(t, p, 1)
}

func TestCutAfterReply(t *testing.T) {
	s, _ := beginThenCut(t, "Commit", CutAfterReply, "commit;")
	// The server got the request and answered it; the client saw nothing.
	s.waitReceived(t, "begin;commit;")
}

func TestPatternSplitAcrossReads(t *testing.T) {
	s, p := echoBehindProxy(t)
	c := dial(t, p)
	p.Arm([]byte("commit"), CutBeforeForward)
	// Each round trip forces the proxy to read the piece on its own.
	roundTrip(t, c, "xxCO")
	roundTrip(t, c, "m")
	select {
	case <-p.Fired():
		require.FailNow(t, "fired on a partial pattern")
	default:
	}
	sendAndExpectCut(t, p, c, "MiT yy")
	require.Equal(t, "xxCOm", s.received())
}

func TestPatternSeenBeforeArmDoesNotFire(t *testing.T) {
	_, p := echoBehindProxy(t)
	c := dial(t, p)
	roundTrip(t, c, "commit")
	p.Arm([]byte("commit"), CutBeforeForward)
	roundTrip(t, c, "other")
	require.Zero(t, p.Fires(), "a pattern sent before Arm fired the fault")
	sendAndExpectCut(t, p, c, "COMMIT")
}

func TestOneShotFiresOnOneConnection(t *testing.T) {
	_, p := echoBehindProxy(t)
	c1, c2 := twoConns(t, p)
	p.Arm([]byte("commit"), CutBeforeForward)
	sendAndExpectCut(t, p, c1, "commit")
	roundTrip(t, c2, "commit")
	wantFires(t, p, 1)
}

func TestCutAll(t *testing.T) {
	_, p := echoBehindProxy(t)
	c1, c2 := twoConns(t, p)
	require.Equal(t, 2, p.CutAll(), "connections CutAll closed")
	expectClosed(t, c1)
	expectClosed(t, c2)
	// New connections still work.
	c3 := dial(t, p)
	roundTrip(t, c3, "c")
	assert.Equal(t, 3, p.Accepted())
}

func TestUnreachableTargetClosesClient(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	_ = ln.Close()
	p := startProxy(t, addr)
	c := dial(t, p)
	expectClosed(t, c)
}

func TestCloseLeaksNoGoroutines(t *testing.T) {
	s := newEchoServer(t)
	before := goleak.IgnoreCurrent()
	p, err := Start(s.ln.Addr().String())
	require.NoError(t, err)
	var conns []net.Conn
	for i := 0; i < 5; i++ {
		c, err := net.Dial("tcp", p.Addr())
		require.NoError(t, err)
		roundTrip(t, c, "x")
		conns = append(conns, c)
	}
	require.NoError(t, p.Close())
	require.NoError(t, p.Close(), "second Close")
	for _, c := range conns {
		expectClosed(t, c)
		_ = c.Close()
	}
	// The echo server's handlers end once the proxy closed their side.
	goleak.VerifyNone(t, before)
	_, err = net.Dial("tcp", p.Addr())
	assert.Error(t, err, "proxy still accepts after Close")
}

func TestModeString(t *testing.T) {
	for m, want := range map[Mode]string{CutBeforeForward: "CutBeforeForward", CutAfterReply: "CutAfterReply", Mode(9): "Mode(9)"} {
		t.Run(want, func(t *testing.T) {
			assert.Equal(t, want, m.String(), "%d.String()", int(m))
		})
	}
}
