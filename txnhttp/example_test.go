package txnhttp_test

import (
	"database/sql"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"

	"github.com/txnkit/txn"
	"github.com/txnkit/txn/backends/txnsql"
	"github.com/txnkit/txn/txnhttp"
)

// A handler written as a HandlerFunc returns its error: a serialization
// failure or deadlock re-runs it from the start, with the same body, in a
// new transaction; the client gets the response of the attempt that
// committed. Conflict keys come from the request.
func Example() {
	var db *sql.DB // sql.Open(driver, dsn)
	r := txnsql.New(db, nil)

	mw := txnhttp.New(r,
		txnhttp.SkipSafeMethods(),
		txnhttp.Keys(func(req *http.Request) []string { return []string{"account:" + req.PathValue("id")} }),
	)
	deposit := txnhttp.HandlerFunc(func(w http.ResponseWriter, req *http.Request) error {
		tx, err := txnsql.Tx(req.Context())
		if err != nil {
			return err
		}
		var in struct{ Amount int64 }
		if err := json.NewDecoder(req.Body).Decode(&in); err != nil {
			http.Error(w, "bad JSON", http.StatusBadRequest) // rolls back, sent as is
			return nil
		}
		id, _ := strconv.ParseInt(req.PathValue("id"), 10, 64)
		if _, err := tx.ExecContext(req.Context(), "UPDATE accounts SET balance = balance + ? WHERE id = ?", in.Amount, id); err != nil {
			return err // retried if retryable, else 500
		}
		_ = txn.OnCommit(req.Context(), func() { /* publish an event */ })
		w.WriteHeader(http.StatusNoContent)
		return nil
	})

	mux := http.NewServeMux()
	mux.Handle("POST /accounts/{id}/deposit", mw.Wrap(deposit)) // operation name: the pattern
	_ = http.ListenAndServe("127.0.0.1:8080", mux)
}

// An error handler that keeps the default statuses and answers in JSON.
func ExampleErrorHandler() {
	var r *txnsql.Runner
	_ = txnhttp.New(r, txnhttp.ErrorHandler(func(w http.ResponseWriter, req *http.Request, err error) {
		code, msg := txnhttp.Status(req, err)
		if errors.Is(err, txn.ErrAttemptsExhausted) {
			w.Header().Set("Retry-After", "2")
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
	}))
}
