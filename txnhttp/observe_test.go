package txnhttp_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/txnkit/txn"
	"github.com/txnkit/txn/internal/integrationtest"
	"github.com/txnkit/txn/txnhttp"
)

// TestEveryEventOfARequestCarriesItsRoute: the attempts, retries, commit
// and give-ups of a request, whatever its outcome (retried and committed,
// 503 after the attempt limit, the handler's own 400, a client that has
// gone before the first attempt), all carry the route pattern.
func TestEveryEventOfARequestCarriesItsRoute(t *testing.T) {
	o := &integrationtest.OpsRecorder{}
	_, r := newRunner(t, txn.WithObserver(o))
	mw := txnhttp.New(r, txnhttp.CallOptions(func(*http.Request) []txn.CallOption { return []txn.CallOption{txn.MaxAttempts(3)} }))
	n := 0
	mux := http.NewServeMux()
	mux.Handle("POST /retried/{id}", mw.Wrap(txnhttp.HandlerFunc(func(w http.ResponseWriter, req *http.Request) error {
		if n++; n == 1 {
			return errConflict
		}
		return nil
	})))
	mux.Handle("POST /busy", mw.Wrap(txnhttp.HandlerFunc(func(w http.ResponseWriter, req *http.Request) error { return errConflict })))
	mux.Handle("POST /bad", mw.Wrap(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) { http.Error(w, "no", http.StatusBadRequest) })))
	url := serve(t, mux)

	check := func(route string, code int, want string, send func() int) {
		t.Helper()
		o.Reset()
		o.Take()
		assert.Equal(t, code, send(), route)
		assert.Equal(t, want, o.String(), route)
		ops := o.Take()
		for i, op := range ops {
			assert.Equal(t, route, op, "%s: event %d", route, i)
		}
		assert.NotEmpty(t, ops, route)
	}
	check("POST /retried/{id}", http.StatusOK, "attempt 1, retry retryable, attempt 2, committed",
		func() int { return do(t, "POST", url+"/retried/1", "").code })
	check("POST /busy", http.StatusServiceUnavailable, "attempt 1, retry retryable, attempt 2, retry retryable, attempt 3, gave up retryable",
		func() int { return do(t, "POST", url+"/busy", "").code })
	check("POST /bad", http.StatusBadRequest, "attempt 1, gave up permanent",
		func() int { return do(t, "POST", url+"/bad", "").code })
	check("POST /busy", http.StatusServiceUnavailable, "gave up permanent", func() int {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		req := httptest.NewRequestWithContext(ctx, "POST", "/busy", nil)
		w := httptest.NewRecorder()
		mw.Wrap(mux).ServeHTTP(w, req)
		return w.Code
	})
}
