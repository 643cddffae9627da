package txnhttp_test

import (
	"context"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/txnkit/txn"
	"github.com/txnkit/txn/txnhttp"
)

// These tests try to make the middleware send a wrong response with
// handlers that misbehave: they write past the buffer, flush, hijack, panic,
// write 1xx statuses and trailers, call WriteHeader twice, keep writing
// from goroutines after they return, and lose their client half-way.
// Whatever the handler does, the client must get one response, the one of
// the attempt that committed (or an aborted one), never bytes, headers or
// statuses of a retried attempt, and OnCommit work must happen once.

// quietServer is a real HTTP/1.1 server for h whose panics are not logged
// (some tests panic on purpose).
func quietServer(t *testing.T, h http.Handler, config func(*http.Server)) *httptest.Server {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	if config != nil {
		config(srv.Config)
	}
	srv.Start()
	t.Cleanup(func() {
		srv.Client().CloseIdleConnections()
		srv.Close()
	})
	return srv
}

// served wraps h so that done is closed when the middleware's ServeHTTP has
// returned (or unwound with a panic).
func served(h http.Handler) (http.Handler, <-chan struct{}) {
	done := make(chan struct{})
	var once sync.Once
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		defer once.Do(func() { close(done) })
		h.ServeHTTP(w, req)
	}), done
}

// wait fails the test if ch is not closed within a generous bound (a hang).
func wait(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatalf("hang: %s", what)
	}
}

// send does one request with c and returns the response, or the error of
// the round trip (a connection closed before any response).
func send(t *testing.T, c *http.Client, req *http.Request) (response, error) {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		return response{}, err
	}
	defer resp.Body.Close()
	b, rerr := io.ReadAll(resp.Body)
	return response{code: resp.StatusCode, header: resp.Header, body: string(b), readErr: rerr}, nil
}

func post(t *testing.T, url, body string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	require.NoError(t, err)
	return req
}

func TestAdversarialRetriedAttemptLeavesNoTrace(t *testing.T) {
	db, r := newRunner(t)
	const limit = 64
	var calls, committedEvents, retriedEvents atomic.Int32
	h := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		n := calls.Add(1)
		tx(req).Write("row")
		if n == 1 {
			assert.NoError(t, txn.OnCommit(req.Context(), func() { retriedEvents.Add(1) }))
			w.Header().Del("X-Request-Id") // set by the outer middleware
			w.Header().Set("X-Attempt", "1")
			w.Header().Set("Content-Length", "9999")
			http.SetCookie(w, &http.Cookie{Name: "session", Value: "from-attempt-1"})
			w.WriteHeader(http.StatusCreated)
			// Exactly the buffer's size: held, not streamed, so retryable.
			_, err := io.WriteString(w, strings.Repeat("1", limit))
			assert.NoError(t, err)
			txnhttp.Fail(req.Context(), errConflict)
			return
		}
		assert.NoError(t, txn.OnCommit(req.Context(), func() { committedEvents.Add(1) }))
		assert.Empty(t, w.Header().Get("X-Attempt"), "a new attempt starts from an empty response")
		assert.Equal(t, "req-7", w.Header().Get("X-Request-Id"), "and with the outer middleware's headers")
		w.Header().Set("X-Attempt", "2")
		w.WriteHeader(http.StatusAccepted)
		w.WriteHeader(http.StatusInternalServerError) // superfluous: the first status wins
		_, _ = io.WriteString(w, "two")
	})
	outer := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			w.Header().Set("X-Request-Id", "req-7")
			next.ServeHTTP(w, req)
		})
	}
	srv := quietServer(t, outer(txnhttp.New(r, txnhttp.MaxResponse(limit)).Wrap(h)), nil)
	resp, err := send(t, srv.Client(), post(t, srv.URL, "x"))
	require.NoError(t, err)
	require.NoError(t, resp.readErr)
	assert.Equal(t, http.StatusAccepted, resp.code)
	assert.Equal(t, "two", resp.body)
	assert.Equal(t, []string{"2"}, resp.header.Values("X-Attempt"))
	assert.Equal(t, "req-7", resp.header.Get("X-Request-Id"))
	assert.Empty(t, resp.header.Values("Set-Cookie"))
	assert.Equal(t, "3", resp.header.Get("Content-Length"))
	assert.Equal(t, int32(2), calls.Load())
	assert.Equal(t, int32(1), committedEvents.Load())
	assert.Zero(t, retriedEvents.Load(), "the retried attempt's OnCommit never runs")
	assert.Equal(t, 1, db.Committed("row"))
}

func TestAdversarialWriteHeaderTwiceFirstStatusDecides(t *testing.T) {
	for name, c := range map[string]struct {
		first, second, want int
		committed           int
	}{
		"ok then error":        {http.StatusOK, http.StatusInternalServerError, http.StatusOK, 1},
		"conflict then ok":     {http.StatusConflict, http.StatusOK, http.StatusConflict, 0},
		"early hints then 409": {http.StatusEarlyHints, http.StatusConflict, http.StatusConflict, 0},
	} {
		t.Run(name, func(t *testing.T) {
			db, r := newRunner(t)
			calls := 0
			h := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
				calls++
				tx(req).Write("row")
				w.WriteHeader(c.first)
				w.WriteHeader(c.second)
				_, _ = io.WriteString(w, "body")
			})
			srv := quietServer(t, txnhttp.New(r).Wrap(h), nil)
			resp, err := send(t, srv.Client(), post(t, srv.URL, ""))
			require.NoError(t, err)
			assert.Equal(t, c.want, resp.code)
			assert.Equal(t, "body", resp.body)
			assert.Equal(t, 1, calls)
			assert.Equal(t, c.committed, db.Committed("row"))
		})
	}
}

func TestAdversarialInformationalStatusOfRetriedAttemptIsNotSent(t *testing.T) {
	db, r := newRunner(t)
	calls := 0
	h := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		calls++
		tx(req).Write("row")
		w.Header().Set("Link", "</attempt-"+string(rune('0'+calls))+".css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		if calls == 1 {
			txnhttp.Fail(req.Context(), errConflict)
			return
		}
		_, _ = io.WriteString(w, "done")
	})
	srv := quietServer(t, txnhttp.New(r).Wrap(h), nil)
	var mu sync.Mutex
	var infos []string
	trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, hdr textproto.MIMEHeader) error {
		mu.Lock()
		defer mu.Unlock()
		infos = append(infos, hdr.Get("Link"))
		return nil
	}}
	req := post(t, srv.URL, "")
	req = req.WithContext(httptrace.WithClientTrace(req.Context(), trace))
	resp, err := send(t, srv.Client(), req)
	require.NoError(t, err)
	assert.Equal(t, http.StatusOK, resp.code)
	assert.Equal(t, "done", resp.body)
	assert.Equal(t, "</attempt-2.css>; rel=preload", resp.header.Get("Link"))
	mu.Lock()
	assert.Empty(t, infos, "1xx statuses are dropped while the response is held (documented)")
	mu.Unlock()
	assert.Equal(t, 1, db.Committed("row"))
}

func TestAdversarialTrailersComeFromTheCommittedAttempt(t *testing.T) {
	db, r := newRunner(t)
	calls := 0
	h := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		calls++
		a := string(rune('0' + calls))
		tx(req).Write("row")
		w.Header().Set("Trailer", "X-Sum")
		_, _ = io.WriteString(w, "body "+a)
		w.Header().Set("X-Sum", "sum-"+a)
		w.Header().Set(http.TrailerPrefix+"X-Late", "late-"+a)
		if calls == 1 {
			txnhttp.Fail(req.Context(), errConflict)
		}
	})
	srv := quietServer(t, txnhttp.New(r).Wrap(h), nil)
	resp, err := srv.Client().Do(post(t, srv.URL, ""))
	require.NoError(t, err)
	b, err := io.ReadAll(resp.Body) // trailers are read with the body
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	assert.Equal(t, "body 2", string(b))
	assert.Equal(t, "sum-2", resp.Trailer.Get("X-Sum"))
	assert.Equal(t, "late-2", resp.Trailer.Get("X-Late"))
	for k, vs := range resp.Header {
		for _, v := range vs {
			assert.NotContains(t, v, "-1", "header %s of the retried attempt", k)
		}
	}
	assert.Equal(t, 2, calls)
	assert.Equal(t, 1, db.Committed("row"))
}

func TestAdversarialRequestBodyReplayedWhateverTheAttemptDidWithIt(t *testing.T) {
	db, r := newRunner(t)
	const body = "a=1&b=two"
	var got []string
	h := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		tx(req).Write("row")
		switch len(got) {
		case 0: // reads part of it, closes it and replaces it
			p := make([]byte, 3)
			_, err := io.ReadFull(req.Body, p)
			assert.NoError(t, err)
			got = append(got, string(p))
			assert.NoError(t, req.Body.Close())
			req.Body = http.NoBody
		case 1: // parses it as a form, which consumes it
			got = append(got, req.FormValue("b"))
		case 2: // a limit smaller than the body, read to its end
			b, err := io.ReadAll(http.MaxBytesReader(w, req.Body, 4))
			assert.Error(t, err)
			got = append(got, string(b))
		default:
			b, err := io.ReadAll(req.Body)
			assert.NoError(t, err)
			got = append(got, string(b))
			_, _ = io.WriteString(w, "read "+string(b))
			return
		}
		txnhttp.Fail(req.Context(), errConflict)
	})
	srv := quietServer(t, txnhttp.New(r).Wrap(h), nil)
	req := post(t, srv.URL, body)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := send(t, srv.Client(), req)
	require.NoError(t, err)
	assert.Equal(t, http.StatusOK, resp.code)
	assert.Equal(t, "read "+body, resp.body)
	assert.Equal(t, []string{"a=1", "two", "a=1&", body}, got)
	assert.Equal(t, 1, db.Committed("row"))
}

func TestAdversarialPanickingHandlerSendsNothing(t *testing.T) {
	for name, c := range map[string]struct {
		value     any
		panicOnly int // the attempt that panics (earlier ones fail retryably)
	}{
		"panic after headers":                 {value: "boom", panicOnly: 1},
		"ErrAbortHandler after headers":       {value: http.ErrAbortHandler, panicOnly: 1},
		"panic in the retry of a held answer": {value: "boom", panicOnly: 2},
	} {
		t.Run(name, func(t *testing.T) {
			db, r := newRunner(t)
			var calls, events atomic.Int32
			h := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
				n := calls.Add(1)
				tx(req).Write("row")
				assert.NoError(t, txn.OnCommit(req.Context(), func() { events.Add(1) }))
				w.Header().Set("X-Attempt", "yes")
				w.WriteHeader(http.StatusCreated)
				_, _ = io.WriteString(w, "complete-looking answer")
				if int(n) < c.panicOnly {
					txnhttp.Fail(req.Context(), errConflict)
					return
				}
				panic(c.value)
			})
			wrapped, done := served(txnhttp.New(r).Wrap(h))
			srv := quietServer(t, wrapped, nil)
			resp, err := send(t, srv.Client(), post(t, srv.URL, ""))
			if err == nil {
				// Whatever arrived must not pass for the handler's answer.
				assert.NotEqual(t, http.StatusCreated, resp.code)
				assert.NotContains(t, resp.body, "complete-looking")
			}
			wait(t, done, "middleware after a panic")
			assert.Equal(t, int32(c.panicOnly), calls.Load(), "a panic is not retried")
			assert.Zero(t, events.Load())
			assert.Zero(t, db.Committed("row"))
		})
	}
}

// TestAdversarialGoroutineOfAReturnedAttemptCannotWrite starts, in each
// attempt, a goroutine that keeps the ResponseWriter and uses it after the
// attempt's handler returned: while the next attempt runs, and after the
// response was sent.
func TestAdversarialGoroutineOfAReturnedAttemptCannotWrite(t *testing.T) {
	db, r := newRunner(t)
	var (
		calls    atomic.Int32
		release  = []chan struct{}{make(chan struct{}), make(chan struct{})}
		finished = []chan struct{}{make(chan struct{}), make(chan struct{})}
		errs     = make([][]error, 2)
	)
	late := func(i int, w http.ResponseWriter, ctx context.Context) {
		defer close(finished[i])
		<-release[i]
		_, werr := io.WriteString(w, strings.Repeat("L", 4096)) // beyond the buffer too
		ferr := http.NewResponseController(w).Flush()
		_, _, herr := http.NewResponseController(w).Hijack()
		w.WriteHeader(http.StatusTeapot)
		txnhttp.Fail(ctx, errBroken) // the attempt is over: no effect
		errs[i] = []error{werr, ferr, herr}
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		n := calls.Add(1)
		tx(req).Write("row")
		go late(int(n-1), w, req.Context())
		if n == 1 {
			_, _ = io.WriteString(w, "attempt 1")
			txnhttp.Fail(req.Context(), errConflict)
			return
		}
		// Attempt 1's goroutine runs during attempt 2.
		close(release[0])
		<-finished[0]
		_, _ = io.WriteString(w, "attempt 2")
	})
	wrapped, done := served(txnhttp.New(r, txnhttp.MaxResponse(1024)).Wrap(h))
	srv := quietServer(t, wrapped, nil)
	resp, err := send(t, srv.Client(), post(t, srv.URL, ""))
	require.NoError(t, err)
	wait(t, done, "middleware")
	close(release[1])
	wait(t, finished[1], "goroutine of attempt 2")
	require.NoError(t, resp.readErr)
	assert.Equal(t, http.StatusOK, resp.code)
	assert.Equal(t, "attempt 2", resp.body)
	for i, es := range errs {
		for j, e := range es {
			assert.Error(t, e, "goroutine of attempt %d, call %d", i+1, j)
		}
	}
	assert.Equal(t, 1, db.Committed("row"))
}

// TestAdversarialGoroutineOfAPanickedAttemptCannotWrite is the test above
// for an attempt whose handler panicked instead of returning.
func TestAdversarialGoroutineOfAPanickedAttemptCannotWrite(t *testing.T) {
	_, r := newRunner(t)
	release := make(chan struct{})
	result := make(chan error, 1)
	h := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		go func() {
			<-release
			_, err := io.WriteString(w, "late")
			result <- err
		}()
		panic(http.ErrAbortHandler)
	})
	wrapped, done := served(txnhttp.New(r).Wrap(h))
	srv := quietServer(t, wrapped, nil)
	_, err := send(t, srv.Client(), post(t, srv.URL, ""))
	assert.Error(t, err, "the connection is closed without a response")
	wait(t, done, "middleware after a panic")
	close(release)
	assert.Error(t, <-result, "a write after the attempt ended is refused, as after a return")
}

// hideHijack is an outer middleware's ResponseWriter that, like many
// logging or metrics wrappers, neither implements http.Hijacker nor
// unwraps.
type hideHijack struct{ http.ResponseWriter }

func (h hideHijack) Flush() { h.ResponseWriter.(http.Flusher).Flush() }

// TestAdversarialFailedHijackThenError hijacks where the connection cannot
// be hijacked (HTTP/2, or an outer wrapper that hides it), sees the error,
// and reports it: the failed hijack changes nothing, so the request rolls
// back with an error response, and a retryable error is retried.
func TestAdversarialFailedHijackThenError(t *testing.T) {
	for _, proto := range []string{"HTTP/1.1 behind a wrapper", "HTTP/2"} {
		for _, fail := range []error{errConflict, errBroken} {
			t.Run(proto+"/"+fail.Error(), func(t *testing.T) {
				db, r := newRunner(t)
				calls := 0
				h := txnhttp.HandlerFunc(func(w http.ResponseWriter, req *http.Request) error {
					calls++
					tx(req).Write("row")
					if _, _, err := http.NewResponseController(w).Hijack(); err == nil {
						t.Error("hijack unexpectedly succeeded")
					}
					return fail
				})
				var srv *httptest.Server
				var client *http.Client
				if proto == "HTTP/2" {
					srv = httptest.NewUnstartedServer(txnhttp.New(r).Wrap(h))
					srv.EnableHTTP2 = true
					srv.Config.ErrorLog = log.New(io.Discard, "", 0)
					srv.StartTLS()
					t.Cleanup(srv.Close)
					client = srv.Client()
					t.Cleanup(client.CloseIdleConnections)
				} else {
					outer := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
						txnhttp.New(r).Wrap(h).ServeHTTP(hideHijack{w}, req)
					})
					srv = quietServer(t, outer, nil)
					client = srv.Client()
				}
				resp, err := send(t, client, post(t, srv.URL, ""))
				if err == nil && resp.readErr == nil {
					assert.GreaterOrEqual(t, resp.code, 500, "a rolled-back request must not look successful: %d %q", resp.code, resp.body)
				}
				assert.Zero(t, db.Committed("row"))
				if fail == errConflict {
					assert.Greater(t, calls, 1, "the failed hijack changed nothing: a retryable error is retried")
				} else {
					assert.Equal(t, 1, calls)
				}
			})
		}
	}
}

func TestAdversarialClientGoneMidRetry(t *testing.T) {
	for name, leaveIn := range map[string]int{"during the retry": 2, "before the retry": 1} {
		t.Run(name, func(t *testing.T) {
			db, r := newRunner(t)
			var calls, events atomic.Int32
			inAttempt := make(chan int, 2)
			h := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
				n := int(calls.Add(1))
				tx(req).Write("row")
				assert.NoError(t, txn.OnCommit(req.Context(), func() { events.Add(1) }))
				_, _ = io.WriteString(w, "attempt")
				inAttempt <- n
				if n == leaveIn {
					<-req.Context().Done() // the client hangs up here
				}
				if n == 1 {
					txnhttp.Fail(req.Context(), errConflict)
				}
				// Attempt 2 ignores the cancellation and succeeds.
			})
			wrapped, done := served(txnhttp.New(r).Wrap(h))
			srv := quietServer(t, wrapped, nil)
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
			req := post(t, srv.URL, "").WithContext(ctx)
			_, err := send(t, srv.Client(), req)
			assert.ErrorIs(t, err, context.Canceled)
			wait(t, done, "middleware after the client left")
			assert.Equal(t, int32(leaveIn), calls.Load(), "no attempt after the client left")
			assert.Zero(t, db.Committed("row"), "no commit after the client left")
			assert.Zero(t, events.Load())
		})
	}
}

// TestAdversarialHandlerOutlivesWriteTimeout: the server's WriteTimeout
// does not end the request's context, so the handler's work commits; the
// response can no longer be written and the client sees a transport error,
// not a response. This pins the behaviour (one attempt, one commit, one
// OnCommit, no hang).
func TestAdversarialHandlerOutlivesWriteTimeout(t *testing.T) {
	db, r := newRunner(t)
	var calls, events atomic.Int32
	h := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		calls.Add(1)
		tx(req).Write("row")
		assert.NoError(t, txn.OnCommit(req.Context(), func() { events.Add(1) }))
		time.Sleep(60 * time.Millisecond) // beyond the WriteTimeout
		_, _ = io.WriteString(w, "too late")
	})
	wrapped, done := served(txnhttp.New(r).Wrap(h))
	srv := quietServer(t, wrapped, func(s *http.Server) { s.WriteTimeout = 20 * time.Millisecond })
	resp, err := send(t, srv.Client(), post(t, srv.URL, ""))
	if err == nil {
		assert.Error(t, resp.readErr, "no complete response after the write deadline")
	}
	wait(t, done, "middleware")
	assert.Equal(t, int32(1), calls.Load())
	assert.Equal(t, 1, db.Committed("row"))
	assert.Equal(t, int32(1), events.Load())
}

// TestAdversarialResponseControllerDoesNotBypassTheBuffer: the attempt's
// writer does not unwrap to the real one, and the ResponseController calls
// that send nothing (deadlines, full duplex) leave the attempt retryable.
func TestAdversarialResponseControllerDoesNotBypassTheBuffer(t *testing.T) {
	db, r := newRunner(t)
	calls := 0
	h := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		calls++
		tx(req).Write("row")
		_, unwraps := w.(interface{ Unwrap() http.ResponseWriter })
		assert.False(t, unwraps, "the real writer is out of the handler's reach")
		rc := http.NewResponseController(w)
		assert.NoError(t, rc.SetWriteDeadline(time.Now().Add(time.Minute)))
		assert.NoError(t, rc.SetReadDeadline(time.Now().Add(time.Minute)))
		assert.NoError(t, rc.EnableFullDuplex())
		_, _ = io.WriteString(w, "attempt "+string(rune('0'+calls)))
		if calls == 1 {
			txnhttp.Fail(req.Context(), errConflict)
		}
	})
	srv := quietServer(t, txnhttp.New(r).Wrap(h), nil)
	resp, err := send(t, srv.Client(), post(t, srv.URL, ""))
	require.NoError(t, err)
	assert.Equal(t, "attempt 2", resp.body)
	assert.Equal(t, 2, calls)
	assert.Equal(t, 1, db.Committed("row"))
}

// TestAdversarialHugeResponseThenRetryableError writes far beyond the
// buffer and then fails retryably, on HTTP/1.1 and HTTP/2: the client gets
// an aborted response, never a complete one, and nothing commits.
func TestAdversarialHugeResponseThenRetryableError(t *testing.T) {
	for _, h2 := range []bool{false, true} {
		t.Run(map[bool]string{false: "HTTP/1.1", true: "HTTP/2"}[h2], func(t *testing.T) {
			db, r := newRunner(t)
			var calls, events atomic.Int32
			h := txnhttp.HandlerFunc(func(w http.ResponseWriter, req *http.Request) error {
				calls.Add(1)
				tx(req).Write("row")
				if err := txn.OnCommit(req.Context(), func() { events.Add(1) }); err != nil {
					return err
				}
				w.Header().Set("Content-Type", "text/plain")
				_, _ = io.WriteString(w, strings.Repeat("z", txnhttp.DefaultMaxResponse+1))
				return txn.Retry(errors.New("lost a race"))
			})
			srv := httptest.NewUnstartedServer(txnhttp.New(r).Wrap(h))
			srv.Config.ErrorLog = log.New(io.Discard, "", 0)
			if h2 {
				srv.EnableHTTP2 = true
				srv.StartTLS()
			} else {
				srv.Start()
			}
			t.Cleanup(srv.Close)
			client := srv.Client()
			t.Cleanup(client.CloseIdleConnections)
			resp, err := send(t, client, post(t, srv.URL, ""))
			if err == nil {
				assert.Error(t, resp.readErr, "the response is aborted")
			}
			assert.Equal(t, int32(1), calls.Load())
			assert.Zero(t, events.Load())
			assert.Zero(t, db.Committed("row"))
		})
	}
}
