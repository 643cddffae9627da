package servicetest

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/txnkit/txn"
	"github.com/txnkit/txn/internal/faultproxy"
	"github.com/txnkit/txn/internal/integrationtest"
	"github.com/txnkit/txn/txnhttp"
)

type response struct {
	code    int
	header  http.Header
	body    string
	readErr error
}

func post(t *testing.T, url, id, body string) response {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*waitLimit)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("X-Req", id)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, rerr := io.ReadAll(resp.Body)
	return response{code: resp.StatusCode, header: resp.Header, body: string(b), readErr: rerr}
}

// pair is the outcome of two concurrent requests whose first attempts both
// read the counter before either writes it: a real conflict.
type pair struct {
	resp     map[string]response
	attempts map[string]int
	bodies   map[string][]string // what each attempt read from the request body
	events   int32               // OnCommit side effects
}

// conflictPair sends requests A and B at once to a handler that reads the
// counter, writes half of its response (and flushes it when streaming),
// waits for the other request (first attempts only), writes an audit row
// through the repository helper, increments the counter and writes the
// rest.
func conflictPair(t *testing.T, s store, streaming bool, callOpts ...txn.CallOption) pair {
	t.Helper()
	var (
		mu  sync.Mutex
		out = pair{resp: map[string]response{}, attempts: map[string]int{}, bodies: map[string][]string{}}
		ev  atomic.Int32
		bar = integrationtest.NewBarrier(2)
	)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		id := r.Header.Get("X-Req")
		b, err := io.ReadAll(r.Body)
		if err != nil {
			txnhttp.Fail(ctx, err)
			return
		}
		mu.Lock()
		out.attempts[id]++
		n := out.attempts[id]
		out.bodies[id] = append(out.bodies[id], string(b))
		mu.Unlock()

		v, err := s.read(ctx)
		if err != nil {
			txnhttp.Fail(ctx, err)
			return
		}
		if err := txn.OnCommit(ctx, func() { ev.Add(1) }); err != nil {
			txnhttp.Fail(ctx, err)
			return
		}
		fmt.Fprintf(w, "req %s attempt %d read %d;", id, n, v)
		if streaming {
			w.(http.Flusher).Flush()
		}
		if n == 1 {
			if err := bar.WaitFor(waitLimit); err != nil {
				txnhttp.Fail(ctx, txn.Permanent(err))
				return
			}
		}
		if err := s.audit(ctx); err != nil {
			txnhttp.Fail(ctx, err)
			return
		}
		if err := s.incr(ctx); err != nil {
			txnhttp.Fail(ctx, err)
			return
		}
		fmt.Fprintf(w, " wrote %d", v+1)
	})
	opts := append(append([]txn.CallOption(nil), s.callOpts...), callOpts...)
	mw := s.mw(txnhttp.CallOptions(func(*http.Request) []txn.CallOption { return opts }))
	require.NoError(t, mw.Err())
	mux := http.NewServeMux()
	mux.Handle("POST /incr", mw.Wrap(h))
	srv := httptest.NewServer(mux)
	defer srv.Close()

	var wg sync.WaitGroup
	for _, id := range []string{"A", "B"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp := post(t, srv.URL+"/incr", id, `{"request":"`+id+`","pad":"`+strings.Repeat(id, 512)+`"}`)
			mu.Lock()
			out.resp[id] = resp
			mu.Unlock()
		}()
	}
	wg.Wait()
	out.events = ev.Load()
	return out
}

// requireRealConflict checks that the Runner retried because the database
// reported its own conflict error.
func requireRealConflict(t *testing.T, s store) {
	t.Helper()
	errs := s.retries.take()
	for _, err := range errs {
		if s.conflict(err) {
			return
		}
	}
	t.Fatalf("no retry on the database's conflict error; retried on %v", errs)
}

// requireSameBodies checks that every attempt of every request read the
// body the client sent.
func requireSameBodies(t *testing.T, p pair) {
	t.Helper()
	for id, bodies := range p.bodies {
		want := `{"request":"` + id + `","pad":"` + strings.Repeat(id, 512) + `"}`
		for i, b := range bodies {
			require.Equal(t, want, b, "request %s attempt %d read another body", id, i+1)
		}
	}
}

func TestHTTPRealConflict(t *testing.T) {
	for _, open := range allStores() {
		s := open(t)
		t.Run(s.name, func(t *testing.T) {
			t.Run("half a response, then a conflict: one response, the committed attempt's", func(t *testing.T) {
				c0, a0 := s.state()
				s.retries.take()
				p := conflictPair(t, s, false)
				requireSameBodies(t, p)
				requireRealConflict(t, s)
				assert.Greater(t, p.attempts["A"]+p.attempts["B"], 2, "a real conflict made one request run again")
				for _, id := range []string{"A", "B"} {
					r := p.resp[id]
					require.NoError(t, r.readErr)
					assert.Equal(t, http.StatusOK, r.code, r.body)
					assert.Equal(t, 1, strings.Count(r.body, "attempt"), "one attempt's response: %q", r.body)
					assert.True(t, strings.HasPrefix(r.body, fmt.Sprintf("req %s attempt %d read ", id, p.attempts[id])),
						"the last (committed) attempt's response: %q", r.body)
					assert.Contains(t, r.body, " wrote ")
				}
				c, a := s.state()
				assert.Equal(t, c0+2, c, "both increments committed once")
				assert.Equal(t, a0+2, a, "the audit rows of the failed attempts were rolled back with them")
				assert.Equal(t, int32(2), p.events, "OnCommit side effect once per request")
			})

			t.Run("streaming: not re-run after the first byte left", func(t *testing.T) {
				c0, a0 := s.state()
				p := conflictPair(t, s, true)
				assert.Equal(t, 1, p.attempts["A"])
				assert.Equal(t, 1, p.attempts["B"])
				aborted := 0
				for id, r := range p.resp {
					assert.Equal(t, http.StatusOK, r.code)
					assert.True(t, strings.HasPrefix(r.body, "req "+id+" attempt 1 read "), r.body)
					if r.readErr != nil {
						aborted++
						assert.NotContains(t, r.body, " wrote ", "the loser's response is cut short")
					} else {
						assert.Contains(t, r.body, " wrote ")
					}
				}
				assert.Equal(t, 1, aborted, "the request that lost the race is aborted, not retried")
				c, a := s.state()
				assert.Equal(t, c0+1, c)
				assert.Equal(t, a0+1, a, "the loser's transaction was rolled back")
				assert.Equal(t, int32(1), p.events)
			})

			t.Run("give-up under contention: 503 with Retry-After", func(t *testing.T) {
				c0, a0 := s.state()
				p := conflictPair(t, s, false, txn.MaxAttempts(1))
				codes := map[int]int{}
				for _, r := range p.resp {
					codes[r.code]++
					if r.code == http.StatusServiceUnavailable {
						assert.Equal(t, "1", r.header.Get("Retry-After"))
						assert.NotContains(t, r.body, "attempt", "nothing of the handler's response")
					}
				}
				assert.Equal(t, map[int]int{http.StatusOK: 1, http.StatusServiceUnavailable: 1}, codes)
				c, a := s.state()
				assert.Equal(t, c0+1, c)
				assert.Equal(t, a0+1, a)
				assert.Equal(t, int32(1), p.events)
			})

			t.Run("permanent error: 500, the helper's row rolled back", func(t *testing.T) {
				c0, a0 := s.state()
				calls := 0
				h := txnhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
					calls++
					if err := s.audit(r.Context()); err != nil {
						return err
					}
					_, _ = io.WriteString(w, "half")
					return s.bad(r.Context())
				})
				opts := s.callOpts
				srv := httptest.NewServer(s.mw(txnhttp.CallOptions(func(*http.Request) []txn.CallOption { return opts })).Wrap(h))
				defer srv.Close()
				r := post(t, srv.URL, "P", "")
				assert.Equal(t, http.StatusInternalServerError, r.code)
				assert.Equal(t, "internal server error\n", r.body)
				assert.Equal(t, 1, calls)
				c, a := s.state()
				assert.Equal(t, c0, c)
				assert.Equal(t, a0, a)
			})
		})
	}
}

func TestHTTPRealCommitOutcomeUnknown(t *testing.T) {
	pool, proxy := proxiedPGPool(t)
	s := pgStoreOn(t, pool)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := s.incr(r.Context()); err != nil {
			txnhttp.Fail(r.Context(), err)
			return
		}
		_, _ = io.WriteString(w, "incremented")
	})
	srv := httptest.NewServer(s.mw().Wrap(h))
	defer srv.Close()
	proxy.Arm([]byte("commit"), faultproxy.CutAfterReply)
	r := post(t, srv.URL, "U", "")
	assert.Equal(t, http.StatusInternalServerError, r.code)
	assert.Contains(t, r.body, "commit outcome unknown")
	assert.NotContains(t, r.body, "incremented")
	c, _ := s.state()
	assert.Equal(t, int64(1), c, "the commit did happen: the message was right not to say it failed")
}

func TestHTTPRealContextEnded(t *testing.T) {
	pool := pgPool(t, nil)
	s := pgStoreOn(t, pool)
	// Another transaction holds the counter's row lock.
	holder, err := pool.Begin(context.Background())
	require.NoError(t, err)
	defer func() { _ = holder.Rollback(context.Background()) }()
	_, err = holder.Exec(context.Background(), "UPDATE "+s.counter+" SET v = v WHERE id = 1")
	require.NoError(t, err)
	blocked := make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = s.audit(r.Context())
		_, _ = io.WriteString(w, "half")
		close(blocked)
		if err := s.incr(r.Context()); err != nil { // waits for the lock until the deadline
			txnhttp.Fail(r.Context(), err)
			return
		}
		_, _ = io.WriteString(w, " and the rest")
	})
	var cancel context.CancelFunc
	deadline := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			var ctx context.Context
			ctx, cancel = context.WithCancel(r.Context())
			next.ServeHTTP(w, r.WithContext(ctx))
		})
	}
	srv := httptest.NewServer(deadline(s.mw().Wrap(h)))
	defer srv.Close()
	go func() {
		<-blocked
		time.Sleep(50 * time.Millisecond) // let the UPDATE reach the lock; not a correctness condition
		cancel()                          // the server ends the request (shutdown, its own deadline)
	}()
	r := post(t, srv.URL, "C", "")
	assert.Equal(t, http.StatusServiceUnavailable, r.code)
	assert.Empty(t, r.header.Get("Retry-After"))
	assert.Equal(t, "request ended before its transaction committed; nothing was changed\n", r.body)
	require.NoError(t, holder.Rollback(context.Background()))
	c, a := s.state()
	assert.Equal(t, int64(0), c)
	assert.Equal(t, int64(0), a)
}
