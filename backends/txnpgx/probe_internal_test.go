package txnpgx

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/txnkit/txn"
)

// LockWaitExpired tells the 55P03 of a lock_timeout from NOWAIT's, by the
// server routine that raised it or, without PostgreSQL's routine, by the
// message, and sees it through wrapping.
func TestLockWaitExpired(t *testing.T) {
	b := &backend{}
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"lock_timeout", &pgconn.PgError{Code: "55P03", Message: "canceling statement due to lock timeout", Routine: "ProcessInterrupts"}, true},
		{"lock_timeout, translated", &pgconn.PgError{Code: "55P03", Message: "Anweisung wird abgebrochen wegen Zeitüberschreitung einer Sperre", Routine: "ProcessInterrupts"}, true},
		{"lock_timeout, no routine", &pgconn.PgError{Code: "55P03", Message: "canceling statement due to lock timeout"}, true},
		{"wrapped", fmt.Errorf("transfer: %w", &pgconn.PgError{Code: "55P03", Routine: "ProcessInterrupts"}), true},
		{"NOWAIT on a row", &pgconn.PgError{Code: "55P03", Message: `could not obtain lock on row in relation "t"`, Routine: "heap_lock_tuple"}, false},
		{"NOWAIT on a table", &pgconn.PgError{Code: "55P03", Message: `could not obtain lock on relation "t"`, Routine: "RangeVarGetRelidExtended"}, false},
		{"statement_timeout", &pgconn.PgError{Code: "57014", Message: "canceling statement due to statement timeout", Routine: "ProcessInterrupts"}, false},
		{"deadlock", &pgconn.PgError{Code: "40P01", Routine: "DeadLockReport"}, false},
		{"not a server error", errors.New("lock timeout"), false},
		{"nil", nil, false},
	} {
		assert.Equal(t, tc.want, b.LockWaitExpired(tc.err), tc.name)
	}
}

// refusingBeginner refuses any BEGIN that sets lock_timeout, as a server
// without the setting would, and records the queries it was asked for.
type refusingBeginner struct{ queries []string }

func (r *refusingBeginner) BeginTx(_ context.Context, o pgx.TxOptions) (pgx.Tx, error) {
	r.queries = append(r.queries, o.BeginQuery)
	if strings.Contains(o.BeginQuery, "lock_timeout") {
		return nil, &pgconn.PgError{Code: "42704", Message: `unrecognized configuration parameter "lock_timeout"`}
	}
	return nil, nil
}

// A server that refuses the probe's lock_timeout gets a plain BEGIN, then
// and for every later probe.
func TestBeginBoundedWaitFallsBack(t *testing.T) {
	db := &refusingBeginner{}
	b := &backend{db: db}
	opts := []txn.BeginOption[pgx.Tx]{TxOptions(pgx.TxOptions{IsoLevel: pgx.Serializable})}
	_, err := b.BeginBoundedWait(context.Background(), opts, 30*time.Millisecond)
	require.NoError(t, err)
	assert.Equal(t, []string{"BEGIN ISOLATION LEVEL serializable; SET LOCAL lock_timeout = 30", ""}, db.queries)
	db.queries = nil
	_, err = b.BeginBoundedWait(context.Background(), opts, 30*time.Millisecond)
	require.NoError(t, err)
	assert.Equal(t, []string{""}, db.queries, "no second try of the setting")
}
