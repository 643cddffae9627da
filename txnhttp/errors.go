package txnhttp

import (
	"context"
	"errors"
	"net/http"

	"github.com/txnkit/txn"
)

// DefaultErrorHandler answers a request whose transaction did not commit
// with the status the package documentation lists: 503 with Retry-After: 1
// when Run gave up under contention, 500 saying the outcome is unknown for
// txn.ErrCommitUnknown, 503 when the request's context ended, 413 for
// ErrBodyTooLarge, 500 otherwise. The body is a short plain-text
// explanation that never includes the error's text.
func DefaultErrorHandler(w http.ResponseWriter, r *http.Request, err error) {
	code, msg := Status(r, err)
	if code == http.StatusServiceUnavailable && contended(err) && r.Context().Err() == nil {
		w.Header().Set("Retry-After", "1")
	}
	http.Error(w, msg, code)
}

// Status returns the status code and message DefaultErrorHandler answers
// err with, for error handlers that only change the presentation.
func Status(r *http.Request, err error) (int, string) {
	switch {
	case errors.Is(err, txn.ErrCommitUnknown):
		return http.StatusInternalServerError, "commit outcome unknown: the request may or may not have taken effect; check before repeating it"
	case errors.Is(err, ErrBodyTooLarge):
		return http.StatusRequestEntityTooLarge, "request body too large"
	case r.Context().Err() != nil, errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return http.StatusServiceUnavailable, "request ended before its transaction committed; nothing was changed"
	case contended(err):
		return http.StatusServiceUnavailable, "too much contention: the transaction was retried and gave up; nothing was changed, try again later"
	}
	return http.StatusInternalServerError, "internal server error"
}

// contended reports whether Run gave up on a limit while retrying.
func contended(err error) bool {
	return errors.Is(err, txn.ErrAttemptsExhausted) || errors.Is(err, txn.ErrElapsedExhausted) ||
		errors.Is(err, txn.ErrBudgetExhausted)
}
