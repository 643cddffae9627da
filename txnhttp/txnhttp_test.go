package txnhttp_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/txnkit/txn"
	"github.com/txnkit/txn/internal/fakedb"
	"github.com/txnkit/txn/txnhttp"
)

// These tests run the middleware over a real HTTP server and client with
// the scripted backend of the core's tests. The same behaviour against
// PostgreSQL, MariaDB and SQLite is tested in integrations/txnhttptest.

var (
	errConflict = fakedb.Err(txn.ClassRetryable, "conflict")
	errBroken   = fakedb.Err(txn.ClassPermanent, "constraint violated")
)

func newRunner(t *testing.T, opts ...txn.RunnerOption) (*fakedb.DB, *txn.Runner[*fakedb.Tx]) {
	t.Helper()
	db := fakedb.New()
	r := txn.New[*fakedb.Tx](db, append([]txn.RunnerOption{txn.WithBackoff(txn.Constant(0))}, opts...)...)
	require.NoError(t, r.Err())
	return db, r
}

// serve starts a server for mux and returns its client and URL.
func serve(t *testing.T, h http.Handler) string {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL
}

type response struct {
	code    int
	header  http.Header
	body    string
	readErr error
}

func do(t *testing.T, method, url, body string) response {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, rerr := io.ReadAll(resp.Body)
	return response{code: resp.StatusCode, header: resp.Header, body: string(b), readErr: rerr}
}

func tx(r *http.Request) *fakedb.Tx {
	t, _ := txn.TxFrom[*fakedb.Tx](r.Context())
	return t
}

func TestRetriedHandlerSendsOnlyTheCommittedResponse(t *testing.T) {
	db, r := newRunner(t)
	var (
		mu       sync.Mutex
		bodies   []string
		attempts int
		events   atomic.Int32
	)
	h := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, err := io.ReadAll(req.Body)
		require.NoError(t, err)
		mu.Lock()
		attempts++
		n := attempts
		bodies = append(bodies, string(b))
		mu.Unlock()
		tx(req).Write("row")
		require.NoError(t, txn.OnCommit(req.Context(), func() { events.Add(1) }))
		w.Header().Set("X-Attempt", string(rune('0'+n)))
		w.WriteHeader(http.StatusCreated)
		_, _ = io.WriteString(w, "attempt "+string(rune('0'+n))+" half")
		if n == 1 {
			txnhttp.Fail(req.Context(), errConflict)
			return
		}
		_, _ = io.WriteString(w, " and the rest")
	})
	mux := http.NewServeMux()
	mux.Handle("POST /items", txnhttp.New(r).Wrap(h))
	resp := do(t, "POST", serve(t, mux)+"/items", `{"n":1}`)

	assert.Equal(t, http.StatusCreated, resp.code)
	assert.Equal(t, "attempt 2 half and the rest", resp.body)
	assert.Equal(t, "2", resp.header.Get("X-Attempt"))
	assert.Equal(t, []string{`{"n":1}`, `{"n":1}`}, bodies, "every attempt reads the whole body")
	assert.Equal(t, int32(1), events.Load(), "OnCommit once")
	assert.Equal(t, 1, db.Committed("row"))
}

func TestOnCommitRunsBeforeTheResponseLeaves(t *testing.T) {
	_, r := newRunner(t)
	var order []string
	var mu sync.Mutex
	note := func(s string) { mu.Lock(); order = append(order, s); mu.Unlock() }
	h := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		require.NoError(t, txn.OnCommit(req.Context(), func() { note("oncommit") }))
		_, _ = io.WriteString(w, "ok")
	})
	// recordWrite notes when the middleware writes the real response.
	outer := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			next.ServeHTTP(&noteWriter{ResponseWriter: w, note: note}, req)
		})
	}
	url := serve(t, outer(txnhttp.New(r).Wrap(h)))
	assert.Equal(t, "ok", do(t, "POST", url, "").body)
	assert.Equal(t, []string{"oncommit", "write"}, order)
}

type noteWriter struct {
	http.ResponseWriter
	note  func(string)
	wrote bool
}

func (n *noteWriter) WriteHeader(code int) {
	if !n.wrote {
		n.wrote = true
		n.note("write")
	}
	n.ResponseWriter.WriteHeader(code)
}

func TestStatusMapping(t *testing.T) {
	cases := []struct {
		name       string
		script     func(db *fakedb.DB)
		err        error
		opts       []txnhttp.Option
		code       int
		retryAfter string
		contains   string
		committed  int
	}{
		{name: "give-up under contention", err: errConflict,
			opts: []txnhttp.Option{txnhttp.CallOptions(func(*http.Request) []txn.CallOption { return []txn.CallOption{txn.MaxAttempts(3)} })},
			code: http.StatusServiceUnavailable, retryAfter: "1", contains: "contention"},
		{name: "unknown commit outcome", script: func(db *fakedb.DB) { db.FailCommit(fakedb.Err(txn.ClassConnLost, "connection reset")) },
			code: http.StatusInternalServerError, contains: "outcome unknown", committed: 1},
		{name: "permanent", err: errBroken, code: http.StatusInternalServerError, contains: "internal server error"},
		{name: "permanent commit error", script: func(db *fakedb.DB) { db.FailCommit(errBroken) },
			code: http.StatusInternalServerError, contains: "internal server error"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			db, r := newRunner(t)
			if c.script != nil {
				c.script(db)
			}
			calls := 0
			h := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
				calls++
				tx(req).Write("row")
				_, _ = io.WriteString(w, "handler's response")
				txnhttp.Fail(req.Context(), c.err)
			})
			resp := do(t, "POST", serve(t, txnhttp.New(r, c.opts...).Wrap(h)), "x")
			assert.Equal(t, c.code, resp.code)
			assert.Equal(t, c.retryAfter, resp.header.Get("Retry-After"))
			assert.Contains(t, resp.body, c.contains)
			assert.NotContains(t, resp.body, "handler's response")
			assert.NotContains(t, resp.body, "constraint", "error text is not sent")
			assert.Equal(t, c.committed, db.Committed("row"))
		})
	}
}

func TestContextEndedWritesOneResponse(t *testing.T) {
	db, r := newRunner(t)
	var cancel context.CancelFunc
	outer := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			var ctx context.Context
			ctx, cancel = context.WithCancel(req.Context())
			next.ServeHTTP(w, req.WithContext(ctx))
		})
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		tx(req).Write("row")
		_, _ = io.WriteString(w, "handler's response")
		cancel() // the server gives up on the request before the commit
	})
	resp := do(t, "POST", serve(t, outer(txnhttp.New(r).Wrap(h))), "")
	assert.Equal(t, http.StatusServiceUnavailable, resp.code)
	assert.Empty(t, resp.header.Get("Retry-After"))
	assert.Equal(t, "request ended before its transaction committed; nothing was changed\n", resp.body)
	assert.Zero(t, db.Committed("row"))
}

func TestHandlerErrorStatusRollsBackAndIsSent(t *testing.T) {
	db, r := newRunner(t)
	calls := 0
	h := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		calls++
		tx(req).Write("row")
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnprocessableEntity)
		_, _ = io.WriteString(w, `{"error":"insufficient funds"}`)
	})
	resp := do(t, "POST", serve(t, txnhttp.New(r).Wrap(h)), "")
	assert.Equal(t, http.StatusUnprocessableEntity, resp.code)
	assert.Equal(t, `{"error":"insufficient funds"}`, resp.body)
	assert.Equal(t, "application/json", resp.header.Get("Content-Type"))
	assert.Zero(t, db.Committed("row"), "rolled back")
	assert.Equal(t, 1, calls)

	// RollbackOn can keep 4xx work.
	resp = do(t, "POST", serve(t, txnhttp.New(r, txnhttp.RollbackOn(func(s int) bool { return s >= 500 })).Wrap(h)), "")
	assert.Equal(t, http.StatusUnprocessableEntity, resp.code)
	assert.Equal(t, 1, db.Committed("row"))
}

func TestBodyBeyondReplayLimit(t *testing.T) {
	db, r := newRunner(t)
	calls := 0
	var got string
	h := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		calls++
		b, _ := io.ReadAll(req.Body)
		got = string(b)
		tx(req).Write("row")
		txnhttp.Fail(req.Context(), errConflict)
	})
	big := strings.Repeat("x", 100)
	resp := do(t, "POST", serve(t, txnhttp.New(r, txnhttp.MaxBody(10)).Wrap(h)), big)
	assert.Equal(t, http.StatusRequestEntityTooLarge, resp.code)
	assert.Zero(t, calls, "the handler does not run")

	// LargeBodyOnce: one attempt, the whole body, no retry; the key
	// function does not consume it.
	var keyBody []byte
	resp = do(t, "POST", serve(t, txnhttp.New(r, txnhttp.MaxBody(10), txnhttp.LargeBodyOnce(),
		txnhttp.Keys(func(req *http.Request) []string { keyBody, _ = io.ReadAll(req.Body); return nil }),
	).Wrap(h)), big)
	assert.Empty(t, keyBody)
	assert.Equal(t, 1, calls)
	assert.Equal(t, big, got)
	assert.Equal(t, http.StatusServiceUnavailable, resp.code, "retryable error, one attempt allowed")
	assert.Zero(t, db.Committed("row"))

	// A body within the limit is retried.
	calls = 0
	resp = do(t, "POST", serve(t, txnhttp.New(r, txnhttp.MaxBody(100), txnhttp.CallOptions(func(*http.Request) []txn.CallOption {
		return []txn.CallOption{txn.MaxAttempts(2)}
	})).Wrap(h)), big)
	assert.Equal(t, 2, calls)
	assert.Equal(t, big, got)
}

// streamingCase is a handler that sends bytes before it fails.
func TestStreamingHandlerIsNotRerun(t *testing.T) {
	cases := map[string]func(w http.ResponseWriter){
		"flush": func(w http.ResponseWriter) {
			_, _ = io.WriteString(w, "first chunk\n")
			w.(http.Flusher).Flush()
		},
		"response controller": func(w http.ResponseWriter) {
			_, _ = io.WriteString(w, "first chunk\n")
			_ = http.NewResponseController(w).Flush()
		},
		"beyond the buffer": func(w http.ResponseWriter) {
			// More than net/http buffers itself, so that bytes do leave.
			_, _ = io.WriteString(w, "first chunk\n"+strings.Repeat("y", 64<<10))
		},
	}
	for name, stream := range cases {
		t.Run(name, func(t *testing.T) {
			db, r := newRunner(t)
			calls := 0
			h := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
				calls++
				tx(req).Write("row")
				stream(w)
				txnhttp.Fail(req.Context(), errConflict) // a later retryable error
			})
			resp := do(t, "POST", serve(t, txnhttp.New(r, txnhttp.MaxResponse(32)).Wrap(h)), "")
			assert.Equal(t, 1, calls, "not re-run after the first byte left")
			assert.Equal(t, http.StatusOK, resp.code)
			assert.True(t, strings.HasPrefix(resp.body, "first chunk\n"), resp.body)
			assert.Error(t, resp.readErr, "the response is aborted, not ended cleanly")
			assert.Zero(t, db.Committed("row"), "rolled back")
		})
	}
}

func TestStreamedAttemptIsNotRerunWhenItsCommitFails(t *testing.T) {
	db, r := newRunner(t)
	db.FailCommit(errConflict)
	calls := 0
	h := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		calls++
		tx(req).Write("row")
		_, _ = io.WriteString(w, "first chunk\n")
		w.(http.Flusher).Flush()
		_, _ = io.WriteString(w, "last chunk\n")
	})
	resp := do(t, "POST", serve(t, txnhttp.New(r).Wrap(h)), "")
	assert.Equal(t, 1, calls)
	assert.Error(t, resp.readErr)
	assert.Zero(t, db.Committed("row"))
}

func TestStreamedAttemptThatCommitsCompletes(t *testing.T) {
	db, r := newRunner(t)
	h := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		tx(req).Write("row")
		_, _ = io.WriteString(w, "first chunk\n")
		w.(http.Flusher).Flush()
		_, _ = io.WriteString(w, "last chunk\n")
	})
	resp := do(t, "POST", serve(t, txnhttp.New(r).Wrap(h)), "")
	require.NoError(t, resp.readErr)
	assert.Equal(t, "first chunk\nlast chunk\n", resp.body)
	assert.Equal(t, 1, db.Committed("row"))
}

func TestHijackedHandlerIsNotRerun(t *testing.T) {
	db, r := newRunner(t)
	calls := 0
	h := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		calls++
		tx(req).Write("row")
		conn, rw, err := w.(http.Hijacker).Hijack()
		require.NoError(t, err)
		_, _ = rw.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 8\r\nConnection: close\r\n\r\nhijacked")
		_ = rw.Flush()
		_ = conn.Close()
		txnhttp.Fail(req.Context(), errConflict)
	})
	resp := do(t, "POST", serve(t, txnhttp.New(r).Wrap(h)), "")
	assert.Equal(t, 1, calls)
	assert.Equal(t, "hijacked", resp.body)
	assert.Zero(t, db.Committed("row"))
}

// obs records the operation and key of every attempt.
type obs struct {
	txn.NopObserver
	mu   sync.Mutex
	seen []string
}

func (o *obs) AttemptStarted(_ context.Context, e txn.AttemptEvent) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.seen = append(o.seen, e.Operation+" key="+e.Key)
}

func TestOperationKeysAndSkip(t *testing.T) {
	o := &obs{}
	_, r := newRunner(t, txn.WithObserver(o))
	mw := txnhttp.New(r,
		txnhttp.Keys(func(req *http.Request) []string {
			b, _ := io.ReadAll(req.Body) // the handler still reads it whole
			return []string{"account:" + req.PathValue("id"), "body:" + string(b)}
		}),
		txnhttp.SkipSafeMethods())
	var inTx []bool
	var bodies []string
	h := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		_, ok := txn.TxFrom[*fakedb.Tx](req.Context())
		inTx = append(inTx, ok)
		b, _ := io.ReadAll(req.Body)
		bodies = append(bodies, string(b))
	})
	mux := http.NewServeMux()
	mux.Handle("/accounts/{id}", mw.Wrap(h))
	mux.Handle("/named", mw.WrapNamed("custom name", h))
	url := serve(t, mux)
	do(t, "POST", url+"/accounts/7", "a")
	do(t, "GET", url+"/accounts/7", "")
	do(t, "PUT", url+"/named", "b")
	assert.Equal(t, []bool{true, false, true}, inTx)
	assert.Equal(t, []string{"a", "", "b"}, bodies)
	assert.Equal(t, []string{"/accounts/{id} key=account:7", "custom name key=account:"}, o.seen)
}

func TestErrorHandlerIsReplaceable(t *testing.T) {
	_, r := newRunner(t)
	var got error
	mw := txnhttp.New(r, txnhttp.ErrorHandler(func(w http.ResponseWriter, req *http.Request, err error) {
		got = err
		code, _ := txnhttp.Status(req, err)
		w.WriteHeader(code)
		_, _ = io.WriteString(w, `{"error":"busy"}`)
	}), txnhttp.CallOptions(func(*http.Request) []txn.CallOption { return []txn.CallOption{txn.MaxAttempts(2)} }))
	h := txnhttp.HandlerFunc(func(w http.ResponseWriter, req *http.Request) error { return errConflict })
	resp := do(t, "POST", serve(t, mw.Wrap(h)), "")
	assert.Equal(t, http.StatusServiceUnavailable, resp.code)
	assert.Equal(t, `{"error":"busy"}`, resp.body)
	assert.ErrorIs(t, got, txn.ErrAttemptsExhausted)
	assert.ErrorIs(t, got, errConflict)
}

func TestHandlerFuncOutsideMiddleware(t *testing.T) {
	h := txnhttp.HandlerFunc(func(w http.ResponseWriter, req *http.Request) error { return errors.New("boom") })
	resp := do(t, "GET", serve(t, h), "")
	assert.Equal(t, http.StatusInternalServerError, resp.code)
	assert.False(t, txnhttp.Fail(context.Background(), errors.New("x")))
}

func TestBadConfiguration(t *testing.T) {
	_, r := newRunner(t)
	for name, o := range map[string]txnhttp.Option{
		"MaxBody(-1)":        txnhttp.MaxBody(-1),
		"MaxResponse(-1)":    txnhttp.MaxResponse(-1),
		"ErrorHandler(nil)":  txnhttp.ErrorHandler(nil),
		"Skip(nil)":          txnhttp.Skip(nil),
		"Keys(nil)":          txnhttp.Keys(nil),
		"CallOptions(nil)":   txnhttp.CallOptions(nil),
		"OperationName(nil)": txnhttp.OperationName(nil),
		"RollbackOn(nil)":    txnhttp.RollbackOn(nil),
	} {
		t.Run(name, func(t *testing.T) {
			assert.ErrorIs(t, txnhttp.New(r, o).Err(), txnhttp.ErrBadOption)
		})
	}
	var nilRunner *txn.Runner[*fakedb.Tx]
	mw := txnhttp.New(nilRunner)
	assert.ErrorIs(t, mw.Err(), txn.ErrNilRunner)
	resp := do(t, "POST", serve(t, mw.Wrap(http.NotFoundHandler())), "")
	assert.Equal(t, http.StatusInternalServerError, resp.code)

	// A bad per-request option is a permanent error: 500, handler not run.
	calls := 0
	mw = txnhttp.New(r, txnhttp.CallOptions(func(*http.Request) []txn.CallOption { return []txn.CallOption{txn.MaxAttempts(-1)} }))
	resp = do(t, "POST", serve(t, mw.Wrap(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { calls++ }))), "")
	assert.Equal(t, http.StatusInternalServerError, resp.code)
	assert.Zero(t, calls)
}

func TestWholeMuxAndNestedMiddleware(t *testing.T) {
	o := &obs{}
	db, r := newRunner(t, txn.WithObserver(o))
	mw := txnhttp.New(r)
	calls := 0
	h := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		calls++
		tx(req).Write("row")
		_, _ = io.WriteString(w, "ok")
	})
	mux := http.NewServeMux()
	mux.Handle("POST /items/{id}", mw.Wrap(h)) // applied twice: the inner one joins
	url := serve(t, mw.Wrap(mux))
	resp := do(t, "POST", url+"/items/3", "")
	assert.Equal(t, http.StatusOK, resp.code)
	assert.Equal(t, "ok", resp.body)
	assert.Equal(t, 1, calls)
	assert.Equal(t, 1, db.Committed("row"))
	assert.Equal(t, []string{"POST /items/{id} key="}, o.seen, "one Run, named by the pattern the mux chose")
}
