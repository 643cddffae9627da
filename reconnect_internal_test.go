package txn

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
)

// TestConnectionFailuresAreNotConflicts: the adaptive controller learns
// contention from retryable errors, but not from a BEGIN that failed or a
// connection lost before COMMIT, which a database restart produces by the
// thousand.
func TestConnectionFailuresAreNotConflicts(t *testing.T) {
	e := errors.New("x")
	assert.Equal(t, endConflict, endOf(outcome{err: e, class: ClassRetryable}))
	assert.Equal(t, endOther, endOf(outcome{err: e, class: ClassRetryable, unreached: true}))
	assert.Equal(t, endOther, endOf(outcome{err: e, class: ClassRetryable, connLost: true}))
	assert.Equal(t, endCommitted, endOf(outcome{}))
}
