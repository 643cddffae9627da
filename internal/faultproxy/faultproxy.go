// Package faultproxy is a TCP proxy for tests that cuts connections at
// chosen points of a database conversation: before a request reaches the
// server, or after the server has answered it but before the answer reaches
// the client. The second is how a test makes "the connection died while
// COMMIT was in flight" happen for real: the server commits, the client
// never hears about it.
//
// A Proxy listens on 127.0.0.1, forwards every accepted connection to one
// target, and relays bytes both ways unchanged until a fault armed with Arm
// fires. Faults are one-shot and are triggered by a pattern in the
// client-to-server byte stream.
package faultproxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"time"
)

// Mode says what an armed fault does when its pattern is seen.
type Mode int

const (
	// CutBeforeForward closes both sides of the connection without
	// forwarding the chunk of client bytes that completed the pattern: the
	// server never receives the request.
	CutBeforeForward Mode = iota + 1
	// CutAfterReply forwards the chunk that completed the pattern, waits
	// for the server's next read to return bytes (its reply), and closes
	// both sides without relaying those bytes: the server acted on the
	// request, the client never learns the outcome. The proxy does not
	// parse the protocol: the first bytes the server sends after the
	// trigger count as the reply, which holds for request-response
	// protocols such as PostgreSQL's and MySQL's when the client does not
	// pipeline.
	CutAfterReply
	// Stall withholds the chunk that completed the pattern, and everything
	// that client sends after it, until Release is called: the connection
	// stays open but the server hears nothing, as over a link that went
	// silent. Release forwards the withheld bytes and relaying resumes.
	Stall
)

// String returns the mode's name.
func (m Mode) String() string {
	switch m {
	case CutBeforeForward:
		return "CutBeforeForward"
	case CutAfterReply:
		return "CutAfterReply"
	case Stall:
		return "Stall"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// ConnectFault says what the proxy does to the connections it accepts,
// while clients are still connecting. Set it with SetConnectFault.
type ConnectFault int

const (
	// ConnectPass relays new connections normally (the default).
	ConnectPass ConnectFault = iota
	// ResetOnAccept resets each new connection (a TCP RST, SO_LINGER 0)
	// as soon as it is accepted, before the target is dialed: the client
	// sees its connection reset before the server said anything.
	ResetOnAccept
	// ResetAfterGreeting relays each new connection until the first bytes
	// from the server (MySQL's greeting, or PostgreSQL's first answer to
	// the startup message) have reached the client, then resets both
	// sides: the client sees its connection reset in the middle of the
	// handshake.
	ResetAfterGreeting
)

// dialTimeout bounds the connection to the target for each accepted client.
const dialTimeout = 5 * time.Second

// fault is one armed, one-shot fault.
type fault struct {
	pattern []byte // lower-cased
	mode    Mode
	fired   chan struct{}
	release chan struct{} // closed by Release, for Stall

	releaseOnce sync.Once
}

// Proxy is a running fault-injecting proxy. Its methods are safe for
// concurrent use.
type Proxy struct {
	target string
	ln     net.Listener
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu    sync.Mutex
	links map[*link]struct{}
	armed *fault
	last  chan struct{} // fired channel of the most recent Arm
	// lastFault is the most recent Arm's fault, for Release.
	lastFault *fault
	fires     int
	keep      int // bytes of client stream each link remembers for split patterns
	closed    bool
	accepts   int
	connect   ConnectFault
	resets    int // connections reset by a ConnectFault

	chaos      Chaos
	chaosRand  *rand.Rand
	chaosStats ChaosStats
}

// Start listens on 127.0.0.1 on a free port and forwards every accepted
// connection to target (host:port). It returns an error if it cannot
// listen; an unreachable target shows up as connections that close at once.
func Start(target string) (*Proxy, error) {
	return StartAt("127.0.0.1:0", target)
}

// StartAt is Start listening on listen (host:port) instead of a free port.
// A test uses it to open, at a moment it chooses, an address that refused
// connections until then. It returns an error if it cannot listen there.
func StartAt(listen, target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, fmt.Errorf("faultproxy: listen: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Proxy{
		target: target,
		ln:     ln,
		ctx:    ctx,
		cancel: cancel,
		links:  make(map[*link]struct{}),
		last:   make(chan struct{}),
	}
	p.wg.Add(1)
	go p.acceptLoop()
	return p, nil
}

// Addr returns the address clients connect to, as host:port.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Target returns the address the proxy forwards to.
func (p *Proxy) Target() string { return p.target }

// Close stops listening, closes every connection and waits for all of the
// proxy's goroutines to end. It returns the listener's close error, if any;
// calling it again returns nil.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	links := p.takeLinks()
	p.mu.Unlock()
	p.cancel()
	err := p.ln.Close()
	for _, l := range links {
		l.close()
	}
	p.wg.Wait()
	if err != nil {
		return fmt.Errorf("faultproxy: close: %w", err)
	}
	return nil
}

// Arm sets a one-shot fault, replacing any armed one that has not fired.
// The first connection whose client-to-server stream, from now on, contains
// pattern (ASCII case-insensitive, even when the pattern arrives split
// across several reads) suffers mode. An empty pattern matches the next
// chunk any client sends. Wait for it with Fired.
func (p *Proxy) Arm(pattern []byte, mode Mode) {
	f := &fault{pattern: bytes.ToLower(bytes.Clone(pattern)), mode: mode, fired: make(chan struct{}), release: make(chan struct{})}
	p.mu.Lock()
	p.armed = f
	p.last = f.fired
	p.lastFault = f
	if n := len(pattern) - 1; n > p.keep {
		p.keep = n
	}
	p.mu.Unlock()
}

// Release ends the stall of the most recent Arm with mode Stall, whether it
// has fired yet or not: the withheld bytes are forwarded and relaying
// resumes. Calling it again does nothing.
func (p *Proxy) Release() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.lastFault != nil {
		p.lastFault.releaseOnce.Do(func() { close(p.lastFault.release) })
	}
}

// Disarm removes the armed fault, if it has not fired.
func (p *Proxy) Disarm() {
	p.mu.Lock()
	p.armed = nil
	p.mu.Unlock()
}

// Fired returns a channel that is closed when the fault set by the most
// recent Arm fires: for CutBeforeForward once the matching chunk was
// withheld, for CutAfterReply once the reply was read and withheld. It is
// closed (and Fires counts the fault) before the connection is cut, so a
// client that has seen its connection fail can rely on it. Before any Arm
// it returns a channel that is never closed.
func (p *Proxy) Fired() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.last
}

// Fires returns how many faults have fired since Start.
func (p *Proxy) Fires() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.fires
}

// SetConnectFault sets what happens to the connections accepted from now
// on; ConnectPass restores normal relaying. Connections already
// established are not affected.
func (p *Proxy) SetConnectFault(f ConnectFault) {
	p.mu.Lock()
	p.connect = f
	p.mu.Unlock()
}

// ConnectResets returns how many connections a ConnectFault has reset
// since Start.
func (p *Proxy) ConnectResets() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.resets
}

// Accepted returns how many client connections the proxy has accepted.
func (p *Proxy) Accepted() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.accepts
}

// CutAll closes every live connection, both sides, at once. The proxy keeps
// accepting new ones. It returns how many connections it closed.
func (p *Proxy) CutAll() int {
	p.mu.Lock()
	links := p.takeLinks()
	p.mu.Unlock()
	for _, l := range links {
		l.close()
	}
	return len(links)
}

// takeLinks empties the link set; p.mu must be held.
func (p *Proxy) takeLinks() []*link {
	links := make([]*link, 0, len(p.links))
	for l := range p.links {
		links = append(links, l)
		delete(p.links, l)
	}
	return links
}

func (p *Proxy) acceptLoop() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || p.ctx.Err() != nil {
				return
			}
			// A transient accept error (such as too many open files):
			// pause briefly and keep serving.
			select {
			case <-p.ctx.Done():
				return
			case <-time.After(5 * time.Millisecond):
			}
			continue
		}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			_ = c.Close()
			return
		}
		p.accepts++
		mode := p.connect
		if mode == ResetOnAccept {
			p.resets++
			p.mu.Unlock()
			reset(c)
			continue
		}
		p.wg.Add(1)
		p.mu.Unlock()
		go p.serve(c, mode == ResetAfterGreeting)
	}
}

// reset closes c with a TCP RST instead of a FIN.
func reset(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}

// serve dials the target for client c and relays until either side ends;
// with resetAfterGreeting, until the server's first bytes were relayed.
func (p *Proxy) serve(client net.Conn, resetAfterGreeting bool) {
	defer p.wg.Done()
	if p.chaosConnect() {
		_ = client.Close()
		return
	}
	d := net.Dialer{Timeout: dialTimeout}
	server, err := d.DialContext(p.ctx, "tcp", p.target)
	if err != nil {
		_ = client.Close()
		return
	}
	l := &link{p: p, client: client, server: server, resetAfterGreeting: resetAfterGreeting}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		l.close()
		return
	}
	p.links[l] = struct{}{}
	p.wg.Add(2)
	p.mu.Unlock()
	go l.clientToServer()
	go l.serverToClient()
}

// link is one proxied connection.
type link struct {
	p      *Proxy
	client net.Conn
	server net.Conn

	closeOnce sync.Once

	mu                 sync.Mutex
	resetAfterGreeting bool

	tail      []byte // last bytes of the client stream, lower-cased
	pending   *fault // a CutAfterReply fault waiting for the reply
	triggered bool
	cutReply  bool // chaos: cut when the server's reply arrives
	stalled   bool // chaos: relay nothing more either way
}

func (l *link) close() {
	l.closeOnce.Do(func() {
		_ = l.client.Close()
		_ = l.server.Close()
		l.p.mu.Lock()
		delete(l.p.links, l)
		l.p.mu.Unlock()
	})
}

// fire records that f fired. It runs before the link is closed.
func (l *link) fire(f *fault) {
	l.p.mu.Lock()
	l.p.fires++
	l.p.mu.Unlock()
	close(f.fired)
}

func (l *link) clientToServer() {
	defer l.p.wg.Done()
	defer l.close()
	buf := make([]byte, 32*1024)
	for {
		n, err := l.client.Read(buf)
		if n > 0 {
			chunk := buf[:n]
			l.mu.Lock()
			stalled := l.stalled
			l.mu.Unlock()
			if stalled {
				continue
			}
			f := l.match(chunk)
			if f == nil {
				if !l.chaosChunk(chunk) {
					return
				}
				l.mu.Lock()
				stalled = l.stalled
				l.mu.Unlock()
				if stalled {
					continue
				}
			}
			if f != nil && f.mode == CutBeforeForward {
				l.fire(f)
				l.close()
				return
			}
			if f != nil && f.mode == Stall {
				l.fire(f)
				select {
				case <-f.release:
				case <-l.p.ctx.Done():
					return
				}
				f = nil
			}
			if f != nil {
				// CutAfterReply: the reply watcher must be in place
				// before the server can answer.
				l.mu.Lock()
				l.pending = f
				l.mu.Unlock()
			}
			if _, werr := l.server.Write(chunk); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (l *link) serverToClient() {
	defer l.p.wg.Done()
	defer l.close()
	buf := make([]byte, 32*1024)
	for {
		n, err := l.server.Read(buf)
		if n > 0 {
			l.mu.Lock()
			f, cut, stalled := l.pending, l.cutReply, l.stalled
			l.mu.Unlock()
			if f != nil {
				l.fire(f)
				l.close()
				return
			}
			if cut {
				l.close()
				return
			}
			if stalled {
				continue
			}
			if _, werr := l.client.Write(buf[:n]); werr != nil {
				return
			}
			if l.resetAfterGreeting {
				l.p.mu.Lock()
				l.p.resets++
				l.p.mu.Unlock()
				l.closeOnce.Do(func() {
					reset(l.client)
					reset(l.server)
					l.p.mu.Lock()
					delete(l.p.links, l)
					l.p.mu.Unlock()
				})
				return
			}
		}
		if err != nil {
			l.mu.Lock()
			f := l.pending
			l.mu.Unlock()
			if f != nil {
				// The server closed without a reply: the fault still
				// happened as far as the client can tell.
				l.fire(f)
				l.close()
			}
			return
		}
	}
}

// match looks for the armed pattern in the client stream, including a
// pattern that started in earlier chunks, and claims the fault if found. It
// also remembers the end of the stream for the next call.
func (l *link) match(chunk []byte) *fault {
	lower := bytes.ToLower(chunk)
	l.p.mu.Lock()
	f := l.p.armed
	keep := l.p.keep
	l.p.mu.Unlock()

	l.mu.Lock()
	defer l.mu.Unlock()
	var hit bool
	if f != nil && !l.triggered {
		k := len(f.pattern) - 1
		if k > len(l.tail) {
			k = len(l.tail)
		}
		if k < 0 {
			k = 0
		}
		// Only matches that end in this chunk count: what lay entirely
		// in the tail was seen before the fault was armed or checked.
		window := append(bytes.Clone(l.tail[len(l.tail)-k:]), lower...)
		hit = bytes.Contains(window, f.pattern)
	}
	l.tail = append(l.tail, lower...)
	if len(l.tail) > keep {
		l.tail = append(l.tail[:0], l.tail[len(l.tail)-keep:]...)
	}
	if !hit {
		return nil
	}
	// Claim the one-shot fault unless another connection beat us to it.
	l.p.mu.Lock()
	defer l.p.mu.Unlock()
	if l.p.armed != f {
		return nil
	}
	l.p.armed = nil
	l.triggered = true
	return f
}

// chaosChunk applies the proxy's Chaos to a chunk the client sent, before
// it is forwarded. It returns false when the link was closed and the chunk
// must not be forwarded; a stalled link forwards nothing either (the chunk
// is marked so by l.stalled) but keeps reading.
func (l *link) chaosChunk(chunk []byte) bool {
	a, stallFor := l.p.chaosChunk(bytes.ToLower(chunk))
	switch a {
	case cutBefore:
		l.close()
		return false
	case cutAfter:
		l.mu.Lock()
		l.cutReply = true
		l.mu.Unlock()
	case stallBefore, stallAfter:
		if stallFor > 0 {
			time.AfterFunc(stallFor, l.close)
		}
		l.mu.Lock()
		l.stalled = true
		l.mu.Unlock()
		if a == stallAfter {
			_, _ = l.server.Write(chunk)
		}
	}
	return true
}
