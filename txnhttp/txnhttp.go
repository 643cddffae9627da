// Package txnhttp runs an HTTP handler inside a txn transaction and runs it
// again, from the start, when the transaction loses a race: the request is
// retried as one unit, the client sees one response.
//
//	r := txnpgx.New(pool)
//	mw := txnhttp.New(r)
//	mux.Handle("POST /transfer", mw.Wrap(transfer))
//
// Inside the handler the request's context carries the transaction:
// txn.TxFrom, txnpgx.Tx and txnsql.Tx return it, txn.OnCommit registers work
// for after the commit, and a Run of the same Runner joins it.
//
// # One response per request
//
// The handler writes to a buffer, not to the client: status, headers and
// body are held until the transaction has committed, thrown away when the
// attempt is retried, and written once after the commit. OnCommit callbacks
// run after the commit and before the response leaves. The request body is
// read once and every attempt reads it again from the start.
//
// # Telling the middleware that the attempt failed
//
// A handler cannot return an error, so it reports one with Fail (or is
// written as a HandlerFunc, which calls Fail with the error it returns).
// The attempt is then rolled back; if the Runner's classifier says the error
// is retryable (a serialization failure, a deadlock, txn.Retry), the handler
// runs again in a new transaction with the same request and an empty
// response; otherwise the response is decided by the error handler. A Run
// of the same Runner nested in the handler needs no Fail: a retryable error
// inside it already dooms the attempt, and the middleware retries.
//
// A handler that answers with a status of 400 or more without calling Fail
// has decided the response itself: the transaction is rolled back and its
// response is sent as it is, without retry (RollbackOn changes the rule).
//
// # Design decisions
//
// Request body beyond the replay limit (MaxBody, default 1 MiB): answered
// 413 Request Entity Too Large without calling the handler, so that every
// handler that runs can be retried. LargeBodyOnce runs such requests once,
// with the body streamed and without retry, instead.
//
// Streaming: a handler that calls Flush, hijacks the connection, or writes
// more than the response buffer holds (MaxResponse, default 1 MiB) sends
// bytes to the client before the transaction commits. From that moment the
// attempt is the last one: an error reported later, retryable or not, rolls
// the transaction back and Run does not run the handler again (and if the
// commit itself fails with a retryable error, the handler is not re-run
// either). Since a status line can no longer be sent, the middleware then
// aborts the response (panic(http.ErrAbortHandler): HTTP/1.1 closes the
// connection before the end of the body, HTTP/2 resets the stream), so the
// client cannot take a truncated body for a complete one. A hijacked
// connection belongs to the handler; the middleware writes nothing more.
// When the streamed attempt commits, its remaining bytes are written after
// the commit as usual.
//
// Errors become responses through the error handler (ErrorHandler replaces
// it); DefaultErrorHandler answers:
//   - 503 Service Unavailable with Retry-After: 1 when Run gave up under
//     contention (attempt limit, elapsed limit, retry budget). 503 rather than
//     409: the request was valid and may succeed unchanged a moment later,
//     which is what 503 with Retry-After tells clients and proxies; 409 asks
//     the client to change the request.
//   - 500 with a body saying that the outcome is unknown when the commit's
//     outcome is unknown (txn.ErrCommitUnknown): the change may have been
//     applied, the client must check before repeating it.
//   - 503 without Retry-After when the request's context ended before the
//     commit (client gone, server deadline or shutdown). Nothing the handler
//     wrote is sent; the error response is the only one written.
//   - 413 for a body beyond the replay limit (ErrBodyTooLarge).
//   - 500 for every other error (permanent errors). The error text is not
//     sent to the client.
//
// The response is written once per request in every case: the held response
// of the committed attempt, the handler's own 4xx/5xx, or the error
// handler's.
//
// # Per request
//
// Keys names the conflict keys of a request (taken from the path, the
// query or the replayable body), CallOptions adds any txn call option
// (attempt limits, txn.Idempotent) per request, Skip and SkipSafeMethods
// leave requests out (they run without a transaction and without
// buffering). Begin options (an isolation level) are not call options: give
// New a view of the Runner, r.WithBegin(...).
//
// The operation name of each Run (txn.Operation, seen by observers, logs
// and metrics) is the route pattern of the standard ServeMux: r.Pattern when
// the middleware wraps a route's handler, the pattern the mux would choose
// when it wraps a *http.ServeMux, or the name given to WrapNamed;
// OperationName replaces the rule.
//
// A request whose context already carries a transaction of the Runner
// (the middleware applied twice, or a handler called from inside a Run)
// joins it: the handler runs once, in it, writing to the outer response.
//
// # Proven against
//
// The package's own tests use a scripted backend over a real HTTP server.
// The tests of the module integrations/servicetest run the middleware over a
// real HTTP server against PostgreSQL, MariaDB and SQLite with real
// serialization failures and deadlocks.
package txnhttp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"

	"github.com/txnkit/txn"
)

// Default limits.
const (
	// DefaultMaxBody is the largest request body replayed to every attempt.
	DefaultMaxBody = 1 << 20
	// DefaultMaxResponse is the largest response held until the commit.
	DefaultMaxResponse = 1 << 20
)

// Sentinel errors. Match them with errors.Is.
var (
	// ErrBodyTooLarge is given to the error handler when the request body is
	// longer than MaxBody (and LargeBodyOnce is not set).
	ErrBodyTooLarge = errors.New("txnhttp: request body exceeds the replay limit")
	// ErrStreamed is matched by the error of a Run that stopped because the
	// response had already started to reach the client when the attempt
	// failed: the handler cannot be run again.
	ErrStreamed = errors.New("txnhttp: response already streaming, the request cannot be retried")
	// ErrBadOption is matched by Middleware.Err when an option is invalid.
	ErrBadOption = errors.New("txnhttp: invalid option")
)

// Option configures New.
type Option func(*settings)

type settings struct {
	maxBody      int64
	largeOnce    bool
	maxResponse  int
	errorHandler func(http.ResponseWriter, *http.Request, error)
	skip         []func(*http.Request) bool
	keys         func(*http.Request) []string
	callOptions  func(*http.Request) []txn.CallOption
	operation    func(*http.Request) string
	rollbackOn   func(status int) bool
	err          error
}

func (s *settings) fail(format string, args ...any) {
	if s.err == nil {
		s.err = fmt.Errorf("%w: "+format, append([]any{ErrBadOption}, args...)...)
	}
}

// MaxBody sets the largest request body, in bytes, that is held in memory
// and replayed to every attempt; the default is DefaultMaxBody. A negative n
// is an error.
func MaxBody(n int64) Option {
	return func(s *settings) {
		if n < 0 {
			s.fail("MaxBody(%d) is negative", n)
			return
		}
		s.maxBody = n
	}
}

// LargeBodyOnce makes a request whose body exceeds MaxBody run once, with
// its body streamed to the handler and without retry (the call gets
// txn.MaxAttempts(1)), instead of being answered 413.
func LargeBodyOnce() Option {
	return func(s *settings) { s.largeOnce = true }
}

// MaxResponse sets how many bytes of response body are held until the
// commit; the default is DefaultMaxResponse. A handler that writes more
// starts streaming (see the package documentation). A negative n is an
// error.
func MaxResponse(n int) Option {
	return func(s *settings) {
		if n < 0 {
			s.fail("MaxResponse(%d) is negative", n)
			return
		}
		s.maxResponse = n
	}
}

// ErrorHandler replaces DefaultErrorHandler. h is called at most once per
// request, when no response has reached the client yet, with the error Run
// returned (or ErrBodyTooLarge); what it writes is the response. A nil h is
// an error.
func ErrorHandler(h func(w http.ResponseWriter, r *http.Request, err error)) Option {
	return func(s *settings) {
		if h == nil {
			s.fail("ErrorHandler(nil)")
			return
		}
		s.errorHandler = h
	}
}

// Skip leaves the requests for which skip returns true out: their handler
// runs directly, without a transaction, buffering or retry. Several Skip
// options combine: a request is skipped if any says so.
func Skip(skip func(r *http.Request) bool) Option {
	return func(s *settings) {
		if skip == nil {
			s.fail("Skip(nil)")
			return
		}
		s.skip = append(s.skip, skip)
	}
}

// SkipSafeMethods leaves GET, HEAD, OPTIONS and TRACE requests out, as
// Skip does. Their handlers then read outside any transaction (use the
// "transaction or pool" repository helpers, txnpgx.TxOr and txnsql.TxOr).
func SkipSafeMethods() Option {
	return Skip(func(r *http.Request) bool {
		switch r.Method {
		case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
			return true
		}
		return false
	})
}

// Keys takes the conflict keys of each request from it (txn.Keys): calls
// naming a common key run their attempts one at a time. keys is called once
// per request, before the first attempt, with a request whose body can be
// read (and is read again from the start by the handler; a body streamed
// under LargeBodyOnce is not shown to it). Returning no key sets none.
func Keys(keys func(r *http.Request) []string) Option {
	return func(s *settings) {
		if keys == nil {
			s.fail("Keys(nil)")
			return
		}
		s.keys = keys
	}
}

// CallOptions adds txn call options per request (txn.MaxAttempts,
// txn.MaxElapsed, txn.Idempotent, ...). Begin options such as
// txnpgx.TxOptions are not call options: give New a view of the Runner
// (r.WithBegin) instead. opts is called once
// per request, before the first attempt, with a request whose body can be
// read. Its options come after the middleware's own (operation name, keys),
// so they may override them.
func CallOptions(opts func(r *http.Request) []txn.CallOption) Option {
	return func(s *settings) {
		if opts == nil {
			s.fail("CallOptions(nil)")
			return
		}
		s.callOptions = opts
	}
}

// OperationName replaces the rule that names each Run (txn.Operation): by
// default the route pattern of the standard ServeMux (r.Pattern), or the
// name given to WrapNamed. Keep the names few (patterns, not paths with
// ids): metrics are split by them.
func OperationName(name func(r *http.Request) string) Option {
	return func(s *settings) {
		if name == nil {
			s.fail("OperationName(nil)")
			return
		}
		s.operation = name
	}
}

// RollbackOn replaces the rule deciding from the handler's status whether
// the transaction is rolled back (its response is then sent as it is,
// without retry); by default every status of 400 or more rolls back. A nil
// rule is an error.
func RollbackOn(rollback func(status int) bool) Option {
	return func(s *settings) {
		if rollback == nil {
			s.fail("RollbackOn(nil)")
			return
		}
		s.rollbackOn = rollback
	}
}

// Middleware runs handlers in transactions of one Runner. Build it with New;
// it is safe for concurrent use.
type Middleware struct {
	run  func(ctx context.Context, fn func(ctx context.Context) error, opts []txn.CallOption) error
	inTx func(ctx context.Context) bool
	s    settings
}

// New returns the Middleware that runs handlers in transactions of r,
// configured by opts. An invalid option, or a nil r, does not panic: Err
// reports it and every request is answered by the error handler with it.
func New[T any](r *txn.Runner[T], opts ...Option) *Middleware {
	m := &Middleware{s: settings{
		maxBody:      DefaultMaxBody,
		maxResponse:  DefaultMaxResponse,
		errorHandler: DefaultErrorHandler,
		rollbackOn:   func(status int) bool { return status >= 400 },
		operation:    func(r *http.Request) string { return r.Pattern },
	}}
	for _, o := range opts {
		if o != nil {
			o(&m.s)
		}
	}
	if m.s.err == nil {
		if err := r.Err(); err != nil {
			m.s.err = err
		}
	}
	m.run = func(ctx context.Context, fn func(context.Context) error, opts []txn.CallOption) error {
		return r.Run(ctx, func(ctx context.Context, _ T) error { return fn(ctx) }, opts...)
	}
	m.inTx = func(ctx context.Context) bool {
		_, ok := txn.TxFrom[T](ctx)
		return ok
	}
	return m
}

// Err returns the configuration error that every request would be answered
// with, or nil. Check it at start-up.
func (m *Middleware) Err() error { return m.s.err }

// Wrap returns h run in a transaction per request, as the package
// documentation describes. Its signature is that of the middleware of most
// routers (func(http.Handler) http.Handler): pass m.Wrap.
func (m *Middleware) Wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { m.serve(w, r, h, "") })
}

// WrapNamed is Wrap with the operation name set to name, for routers whose
// route patterns the request does not carry (gin, echo, chi, ...).
func (m *Middleware) WrapNamed(name string, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { m.serve(w, r, h, name) })
}

// attemptKey is the context key of the current attempt's state.
type attemptKey struct{}

// attemptState is what Fail reaches through the request's context.
type attemptState struct {
	mu  sync.Mutex
	err error
}

// Fail reports that the handler's attempt failed with err: the transaction
// is rolled back and, when err is retryable, the handler runs again;
// otherwise the error handler answers the request with err. The handler
// should return after calling it; what it wrote in this attempt is
// discarded. Fail returns false, and does nothing, when ctx is not that of a
// request run by a Middleware, or err is nil. The first error reported in
// an attempt wins.
func Fail(ctx context.Context, err error) bool {
	if err == nil || ctx == nil {
		return false
	}
	st, ok := ctx.Value(attemptKey{}).(*attemptState)
	if !ok {
		return false
	}
	st.mu.Lock()
	if st.err == nil {
		st.err = err
	}
	st.mu.Unlock()
	return true
}

// HandlerFunc is a handler that returns its error. As an http.Handler it
// calls Fail with the error; outside a Middleware it answers the error with
// DefaultErrorHandler.
type HandlerFunc func(w http.ResponseWriter, r *http.Request) error

// ServeHTTP calls f and reports its error.
func (f HandlerFunc) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if err := f(w, r); err != nil && !Fail(r.Context(), err) {
		DefaultErrorHandler(w, r, err)
	}
}

// errStatusRollback is matched by what fn returns when the handler's status
// asks for a rollback: the held response is then sent as it is.
var errStatusRollback = errors.New("txnhttp: rolled back")

// statusRollback is that error, saying which status (observers see it in
// their give-up event).
type statusRollback struct{ code int }

func (e statusRollback) Error() string {
	return fmt.Sprintf("txnhttp: rolled back: the handler answered %d", e.code)
}

func (e statusRollback) Is(target error) bool { return target == errStatusRollback }

func (m *Middleware) serve(w http.ResponseWriter, r *http.Request, h http.Handler, name string) {
	s := &m.s
	if s.err != nil {
		s.errorHandler(w, r, s.err)
		return
	}
	for _, skip := range s.skip {
		if skip(r) {
			h.ServeHTTP(w, r)
			return
		}
	}
	if m.inTx(r.Context()) {
		h.ServeHTTP(w, r)
		return
	}
	body, rest, err := readBody(r, s.maxBody)
	if err != nil {
		var mbe *http.MaxBytesError
		switch {
		case errors.As(err, &mbe):
			// An outer http.MaxBytesReader set a smaller limit.
			s.errorHandler(w, r, fmt.Errorf("%w: %w", ErrBodyTooLarge, err))
			return
		case errors.Is(err, ErrBodyTooLarge) && !s.largeOnce:
			s.errorHandler(w, r, err)
			return
		case errors.Is(err, ErrBodyTooLarge):
			// LargeBodyOnce: rest streams the body to a single attempt.
		default:
			http.Error(w, "txnhttp: reading the request body: "+err.Error(), http.StatusBadRequest)
			return
		}
	}
	// replay gives req the body from its start; a probe (for Keys and
	// CallOptions) of a request whose body is streamed (LargeBodyOnce)
	// gets none, so as not to consume it before the handler.
	replay := func(req *http.Request, probe bool) {
		switch {
		case body == nil && rest == nil:
		case rest != nil && probe:
			req.Body, req.GetBody = http.NoBody, nil
		case rest != nil:
			req.Body, req.GetBody = io.NopCloser(rest), nil
		default:
			req.Body = io.NopCloser(bytes.NewReader(body))
			req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
		}
	}

	if name == "" {
		name = s.operation(r)
	}
	if mux, ok := h.(*http.ServeMux); ok && name == "" {
		_, name = mux.Handler(r)
	}
	opts := []txn.CallOption{txn.Operation(name)}
	if rest != nil {
		opts = append(opts, txn.MaxAttempts(1))
	}
	if s.keys != nil || s.callOptions != nil {
		probe := r.Clone(r.Context())
		if s.keys != nil {
			replay(probe, true)
			if keys := s.keys(probe); len(keys) > 0 {
				opts = append(opts, txn.Keys(keys...))
			}
		}
		if s.callOptions != nil {
			replay(probe, true)
			opts = append(opts, s.callOptions(probe)...)
		}
	}

	out := &output{w: w, max: s.maxResponse, base: w.Header().Clone()}
	var final *buffer
	err = m.run(r.Context(), func(ctx context.Context) error {
		if out.streamed() {
			// The previous attempt's bytes reached the client: the handler
			// must not run again.
			return txn.Permanent(ErrStreamed)
		}
		st := &attemptState{}
		ctx = context.WithValue(ctx, attemptKey{}, st)
		req := r.Clone(ctx)
		replay(req, false)
		buf := out.attempt()
		// The attempt's writer closes however the handler ends (a panic
		// included), so that a goroutine it left running cannot write.
		defer buf.end()
		h.ServeHTTP(buf, req)
		buf.end()
		st.mu.Lock()
		ferr := st.err
		st.mu.Unlock()
		switch {
		case ferr != nil && out.streamed():
			return txn.Permanent(fmt.Errorf("%w: %w", ErrStreamed, ferr))
		case ferr != nil:
			return ferr
		case m.s.rollbackOn(buf.status()):
			final = buf
			return txn.Permanent(statusRollback{code: buf.status()})
		}
		final = buf
		return nil
	}, opts)
	switch {
	case err == nil, errors.Is(err, errStatusRollback):
		final.flush()
	case out.hijacked():
		// The connection is the handler's.
	case out.streamed():
		panic(http.ErrAbortHandler)
	default:
		s.errorHandler(w, r, err)
	}
}

// readBody reads r's body up to max bytes. It returns the bytes, or, when
// the body is longer, an error matching ErrBodyTooLarge with rest, a reader
// of the whole body (what was read, then the remainder).
func readBody(r *http.Request, max int64) (body []byte, rest io.Reader, err error) {
	if r.Body == nil || r.Body == http.NoBody {
		return nil, nil, nil
	}
	if r.ContentLength > max {
		return nil, r.Body, fmt.Errorf("%w: Content-Length %d, limit %d", ErrBodyTooLarge, r.ContentLength, max)
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, max+1))
	if err != nil {
		return nil, nil, err
	}
	if int64(len(b)) > max {
		return nil, io.MultiReader(bytes.NewReader(b), r.Body), fmt.Errorf("%w: limit %d", ErrBodyTooLarge, max)
	}
	return b, nil, nil
}
