package txnpgx

import (
	"context"
	"errors"
	"io"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/txnkit/txn"
)

// fakeTx is a pgx.Tx whose Commit and Rollback return set errors. Its
// other methods are not used by these tests.
type fakeTx struct {
	pgx.Tx
	commitErr, rollbackErr error
}

func (f *fakeTx) Commit(context.Context) error   { return f.commitErr }
func (f *fakeTx) Rollback(context.Context) error { return f.rollbackErr }

// fakeBeginner hands out fakeTx values.
type fakeBeginner struct {
	opts []pgx.TxOptions
	tx   *fakeTx
}

func (f *fakeBeginner) BeginTx(_ context.Context, o pgx.TxOptions) (pgx.Tx, error) {
	f.opts = append(f.opts, o)
	return f.tx, nil
}

// TestCommitErrors checks how Commit reports each kind of failure.
func TestCommitErrors(t *testing.T) {
	b := &backend{}
	ctx := context.Background()
	serverErr := &pgconn.PgError{Code: "40001"}
	tests := []struct {
		name      string
		commitErr error
		class     txn.Class
		done      bool
	}{
		{"success", nil, txn.ClassPermanent, false},
		{"tx closed", pgx.ErrTxClosed, txn.ClassPermanent, true},
		{"server answered 40001", serverErr, txn.ClassRetryable, false},
		{"nothing sent", safeErr{}, txn.ClassRetryable, false},
		{"EOF while waiting for the answer", io.ErrUnexpectedEOF, txn.ClassConnLost, false},
		{"context cancelled while waiting", context.Canceled, txn.ClassConnLost, false},
		{"commit turned into rollback", pgx.ErrTxCommitRollback, txn.ClassPermanent, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := b.Commit(ctx, &fakeTx{commitErr: tt.commitErr})
			if tt.commitErr == nil {
				require.NoError(t, err)
				return
			}
			assert.ErrorIs(t, err, tt.commitErr)
			assert.Equal(t, tt.done, errors.Is(err, txn.ErrTxDone), "errors.Is(ErrTxDone)")
			assert.Equal(t, tt.class, b.Classify(err))
		})
	}
	assert.Same(t, serverErr, b.Commit(ctx, &fakeTx{commitErr: serverErr}), "a server error comes back unchanged")
	assert.ErrorIs(t, b.Rollback(ctx, &fakeTx{rollbackErr: pgx.ErrTxClosed}), txn.ErrTxDone, "Rollback of a closed tx")
}

// TestNilDatabase: nil and typed-nil handles yield a Runner that reports
// txn.ErrNilRunner instead of panicking.
func TestNilDatabase(t *testing.T) {
	fn := func(context.Context, pgx.Tx) error { return nil }
	for name, db := range map[string]Beginner{
		"nil":             nil,
		"nil *pgxpool":    (*pgxpool.Pool)(nil),
		"nil *pgx.Conn":   (*pgx.Conn)(nil),
		"nil with custom": (*fakeBeginner)(nil),
	} {
		t.Run(name, func(t *testing.T) {
			assert.ErrorIs(t, New(db).Run(context.Background(), fn), txn.ErrNilRunner)
			assert.ErrorIs(t, New(db, txn.WithClassifier(Classify)).Err(), txn.ErrNilRunner)
		})
	}
}

// TestBeginOptions: TxOptions reaches BeginTx, a view's options replace
// the Runner's, the last option wins, and an option another package built
// for pgx.Tx is a clear error.
func TestBeginOptions(t *testing.T) {
	fb := &fakeBeginner{tx: &fakeTx{}}
	ser := pgx.TxOptions{IsoLevel: pgx.Serializable}
	rr := pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}
	r := New(fb).WithBegin(TxOptions(ser))
	ctx := context.Background()
	fn := func(context.Context, pgx.Tx) error { return nil }
	require.NoError(t, r.Run(ctx, fn))
	require.NoError(t, r.WithBegin(TxOptions(rr)).Run(ctx, fn))
	require.NoError(t, r.WithBegin(TxOptions(ser), TxOptions(rr)).Run(ctx, fn))
	require.NoError(t, New(fb).Run(ctx, fn))
	assert.Equal(t, []pgx.TxOptions{ser, rr, rr, {}}, fb.opts)
	err := r.WithBegin(txn.NewBeginOption[pgx.Tx]("other", "serializable")).Run(ctx, fn)
	assert.ErrorIs(t, err, txn.ErrBadOption)
	assert.ErrorContains(t, err, "a begin option built by other (carrying string) was given to a txnpgx Runner; use txnpgx.TxOptions")
}
