package faultproxy

import (
	"bytes"
	"errors"
	"io"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"
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
	if err != nil {
		t.Fatal(err)
	}
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
	deadline := time.Now().Add(5 * time.Second)
	for s.received() != want {
		if time.Now().After(deadline) {
			t.Fatalf("server received %q, want %q", s.received(), want)
		}
		time.Sleep(time.Millisecond)
	}
}

func startProxy(t *testing.T, target string) *Proxy {
	t.Helper()
	p, err := Start(target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

func dial(t *testing.T, p *Proxy) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// roundTrip writes msg and reads the echo.
func roundTrip(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatalf("write %q: %v", msg, err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("read echo of %q: %v", msg, err)
	}
	if string(got) != msg {
		t.Fatalf("echo = %q, want %q", got, msg)
	}
}

// expectClosed asserts that c yields no more bytes and ends.
func expectClosed(t *testing.T, c net.Conn) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("connection still open")
	}
	if len(b) > 0 {
		t.Fatalf("client received %q after the cut", b)
	}
}

func waitFired(t *testing.T, p *Proxy) {
	t.Helper()
	select {
	case <-p.Fired():
	case <-time.After(5 * time.Second):
		t.Fatal("fault did not fire")
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
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
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
	if got := p.Fires(); got != want {
		t.Fatalf("Fires = %d, want %d", got, want)
	}
}

func TestForwardsBothWays(t *testing.T) {
	s, p := echoBehindProxy(t)
	c := dial(t, p)
	roundTrip(t, c, "hello")
	big := string(bytes.Repeat([]byte("0123456789"), 10000))
	roundTrip(t, c, big)
	if got := s.received(); got != "hello"+big {
		t.Fatalf("server received %d bytes, want %d", len(got), len("hello"+big))
	}
	wantFires(t, p, 0)
}

func TestCutBeforeForward(t *testing.T) {
	s, p := beginThenCut(t, "commit", CutBeforeForward, "x COMMIT;")
	if got := s.received(); got != "begin;" {
		t.Fatalf("server received %q: the matching chunk was forwarded", got)
	}
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
		t.Fatal("fired on a partial pattern")
	default:
	}
	sendAndExpectCut(t, p, c, "MiT yy")
	if got := s.received(); got != "xxCOm" {
		t.Fatalf("server received %q", got)
	}
}

func TestPatternSeenBeforeArmDoesNotFire(t *testing.T) {
	_, p := echoBehindProxy(t)
	c := dial(t, p)
	roundTrip(t, c, "commit")
	p.Arm([]byte("commit"), CutBeforeForward)
	roundTrip(t, c, "other")
	if p.Fires() != 0 {
		t.Fatal("a pattern sent before Arm fired the fault")
	}
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
	if n := p.CutAll(); n != 2 {
		t.Fatalf("CutAll closed %d connections, want 2", n)
	}
	expectClosed(t, c1)
	expectClosed(t, c2)
	// New connections still work.
	c3 := dial(t, p)
	roundTrip(t, c3, "c")
	if p.Accepted() != 3 {
		t.Fatalf("Accepted = %d, want 3", p.Accepted())
	}
}

func TestUnreachableTargetClosesClient(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	p := startProxy(t, addr)
	c := dial(t, p)
	expectClosed(t, c)
}

func TestCloseLeaksNoGoroutines(t *testing.T) {
	s := newEchoServer(t)
	before := runtime.NumGoroutine()
	p, err := Start(s.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	var conns []net.Conn
	for i := 0; i < 5; i++ {
		c, err := net.Dial("tcp", p.Addr())
		if err != nil {
			t.Fatal(err)
		}
		roundTrip(t, c, "x")
		conns = append(conns, c)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	for _, c := range conns {
		expectClosed(t, c)
		_ = c.Close()
	}
	// The echo server's handlers end once the proxy closed their side.
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("%d goroutines before, %d after Close:\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(5 * time.Millisecond)
	}
	if _, err := net.Dial("tcp", p.Addr()); err == nil {
		t.Fatal("proxy still accepts after Close")
	}
}

func TestModeString(t *testing.T) {
	for m, want := range map[Mode]string{CutBeforeForward: "CutBeforeForward", CutAfterReply: "CutAfterReply", Mode(9): "Mode(9)"} {
		if got := m.String(); got != want {
			t.Errorf("%d.String() = %q, want %q", int(m), got, want)
		}
	}
}
