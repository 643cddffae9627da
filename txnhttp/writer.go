package txnhttp

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// errAttemptOver is returned by writes that arrive after the attempt's
// handler returned (from a goroutine it left behind).
var errAttemptOver = errors.New("txnhttp: write after the handler returned")

// output is the real response of one request, shared by its attempts.
type output struct {
	w    http.ResponseWriter
	max  int
	base http.Header // headers set before the middleware ran

	live atomic.Bool // bytes reached the client
	hij  atomic.Bool // the connection was hijacked
}

func (o *output) streamed() bool { return o.live.Load() }
func (o *output) hijacked() bool { return o.hij.Load() }

// attempt returns a fresh buffer for one attempt.
func (o *output) attempt() *buffer {
	h := o.base.Clone()
	if h == nil {
		h = http.Header{}
	}
	return &buffer{out: o, hdr: h}
}

// buffer is the http.ResponseWriter one attempt's handler writes to: it
// holds the response until the commit, or passes it through once the
// attempt streams.
type buffer struct {
	out *output

	mu          sync.Mutex
	hdr         http.Header
	code        int
	wroteHeader bool
	body        bytes.Buffer
	live        bool // this attempt writes through to the client
	done        bool
}

var (
	_ http.ResponseWriter = (*buffer)(nil)
	_ http.Flusher        = (*buffer)(nil)
	_ http.Hijacker       = (*buffer)(nil)
)

// Header returns the headers of the held response (the real ones once the
// attempt streams, so that trailers can be set).
func (b *buffer) Header() http.Header {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.live {
		return b.out.w.Header()
	}
	return b.hdr
}

// WriteHeader records the status. Informational (1xx) statuses are dropped
// while the response is held.
func (b *buffer) WriteHeader(code int) {
	if code < 100 || code > 999 {
		panic(fmt.Sprintf("invalid WriteHeader code %v", code))
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.done:
	case b.live:
		b.out.w.WriteHeader(code)
	case b.wroteHeader, code < 200:
	default:
		b.code, b.wroteHeader = code, true
	}
}

// Write holds p, or writes it to the client once the attempt streams. A
// response growing past the buffer limit starts streaming.
func (b *buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.done {
		return 0, errAttemptOver
	}
	if !b.wroteHeader {
		b.code, b.wroteHeader = http.StatusOK, true
	}
	if !b.live && b.body.Len()+len(p) > b.out.max {
		if err := b.goLive(); err != nil {
			return 0, err
		}
	}
	if b.live {
		return b.out.w.Write(p)
	}
	return b.body.Write(p)
}

// goLive sends the held status, headers and body to the client and makes
// the attempt write through from now on. It is the point of no return.
func (b *buffer) goLive() error {
	b.live = true
	b.out.live.Store(true)
	copyHeader(b.out.w.Header(), b.hdr)
	b.out.w.WriteHeader(b.code)
	_, err := b.out.w.Write(b.body.Bytes())
	b.body.Reset()
	return err
}

// Flush sends what the handler wrote so far to the client: the attempt
// streams from now on and cannot be retried.
func (b *buffer) Flush() { _ = b.FlushError() }

// FlushError is Flush that reports the error (used by
// http.ResponseController).
func (b *buffer) FlushError() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.done {
		return errAttemptOver
	}
	if !b.wroteHeader {
		b.code, b.wroteHeader = http.StatusOK, true
	}
	if !b.live {
		if err := b.goLive(); err != nil {
			return err
		}
	}
	return http.NewResponseController(b.out.w).Flush()
}

// Hijack hands the connection to the handler: the attempt cannot be
// retried, and the middleware writes nothing more. What the handler wrote
// before is discarded.
func (b *buffer) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.done {
		return nil, nil, errAttemptOver
	}
	// The response is the handler's only once the hijack succeeded: one
	// that failed (HTTP/2, a writer that cannot) leaves the attempt as it
	// was, its response still the middleware's to send or retry.
	conn, rw, err := http.NewResponseController(b.out.w).Hijack()
	if err != nil {
		return nil, nil, err
	}
	b.live = true
	b.out.live.Store(true)
	b.out.hij.Store(true)
	b.body.Reset()
	return conn, rw, nil
}

// SetReadDeadline sets the connection's read deadline (for
// http.ResponseController).
func (b *buffer) SetReadDeadline(t time.Time) error {
	return http.NewResponseController(b.out.w).SetReadDeadline(t)
}

// SetWriteDeadline sets the connection's write deadline (for
// http.ResponseController).
func (b *buffer) SetWriteDeadline(t time.Time) error {
	return http.NewResponseController(b.out.w).SetWriteDeadline(t)
}

// EnableFullDuplex lets the handler read the request body while writing
// the response (for http.ResponseController).
func (b *buffer) EnableFullDuplex() error {
	return http.NewResponseController(b.out.w).EnableFullDuplex()
}

// end closes the attempt to further writes.
func (b *buffer) end() {
	b.mu.Lock()
	b.done = true
	b.mu.Unlock()
}

// status is the response status the handler chose (200 if none).
func (b *buffer) status() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.wroteHeader {
		return http.StatusOK
	}
	return b.code
}

// flush writes the held response to the client, once, after the commit (or
// the rest of a streamed one, already written).
func (b *buffer) flush() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.live {
		return
	}
	code := b.code
	if !b.wroteHeader {
		code = http.StatusOK
	}
	copyHeader(b.out.w.Header(), b.hdr)
	b.out.w.WriteHeader(code)
	if b.body.Len() > 0 {
		_, _ = b.out.w.Write(b.body.Bytes())
	}
}

// copyHeader makes dst equal to src.
func copyHeader(dst, src http.Header) {
	clear(dst)
	for k, v := range src {
		dst[k] = v
	}
}
