package txnsql_test

import (
	"database/sql/driver"
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/txnkit/txn"
	"github.com/txnkit/txn/backends/txnsql"
)

// stateError has the SQLState method of pgx's and lib/pq's errors.
type stateError struct{ code string }

func (e *stateError) Error() string    { return "sqlstate " + e.code }
func (e *stateError) SQLState() string { return e.code }

// codeError has the Code method of the pure-Go SQLite drivers' errors.
type codeError struct{ code int }

func (e *codeError) Error() string { return fmt.Sprintf("sqlite %d", e.code) }
func (e *codeError) Code() int     { return e.code }

// TestClassifyGeneric is a unit test of ClassifyGeneric's table; the
// integration modules test it on real drivers' errors from real conflicts.
func TestClassifyGeneric(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want txn.Class
	}{
		{"nil", nil, txn.ClassPermanent},
		{"plain", errors.New("x"), txn.ClassPermanent},
		{"bad conn", fmt.Errorf("query: %w", driver.ErrBadConn), txn.ClassConnLost},
		{"40001", &stateError{"40001"}, txn.ClassRetryable},
		{"40P01 wrapped", fmt.Errorf("exec: %w", &stateError{"40P01"}), txn.ClassRetryable},
		{"40P01 joined", errors.Join(errors.New("first"), &stateError{"40P01"}), txn.ClassRetryable},
		{"23505", &stateError{"23505"}, txn.ClassPermanent},
		{"40003 is not retried", &stateError{"40003"}, txn.ClassPermanent},
		{"typed nil state", fmt.Errorf("exec: %w", (*stateError)(nil)), txn.ClassPermanent},
		{"busy", &codeError{5}, txn.ClassRetryable},
		{"busy snapshot", &codeError{517}, txn.ClassRetryable},
		{"locked shared cache", &codeError{262}, txn.ClassRetryable},
		{"constraint", &codeError{2067}, txn.ClassPermanent},
		{"typed nil code", fmt.Errorf("exec: %w", (*codeError)(nil)), txn.ClassPermanent},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, txnsql.ClassifyGeneric(tc.err))
		})
	}
}
