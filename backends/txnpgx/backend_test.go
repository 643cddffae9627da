package txnpgx

import (
	"context"
	"errors"
	"io"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
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
				if err != nil {
					t.Fatalf("Commit = %v", err)
				}
				return
			}
			if !errors.Is(err, tt.commitErr) {
				t.Errorf("Commit error %v does not wrap %v", err, tt.commitErr)
			}
			if got := errors.Is(err, txn.ErrTxDone); got != tt.done {
				t.Errorf("errors.Is(ErrTxDone) = %v, want %v", got, tt.done)
			}
			if got := b.Classify(err); got != tt.class {
				t.Errorf("class = %v, want %v", got, tt.class)
			}
		})
	}
	if err := b.Commit(ctx, &fakeTx{commitErr: serverErr}); err != serverErr {
		t.Errorf("a server error must come back unchanged, got %#v", err)
	}
	if err := b.Rollback(ctx, &fakeTx{rollbackErr: pgx.ErrTxClosed}); !errors.Is(err, txn.ErrTxDone) {
		t.Errorf("Rollback of a closed tx = %v, want ErrTxDone", err)
	}
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
		r := New(db)
		if err := r.Run(context.Background(), fn); !errors.Is(err, txn.ErrNilRunner) {
			t.Errorf("%s: Run = %v, want ErrNilRunner", name, err)
		}
		if err := New(db, txn.WithClassifier(Classify)).Err(); !errors.Is(err, txn.ErrNilRunner) {
			t.Errorf("%s: Err = %v, want ErrNilRunner", name, err)
		}
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
	if err := r.Run(ctx, fn); err != nil {
		t.Fatal(err)
	}
	if err := r.WithBegin(TxOptions(rr)).Run(ctx, fn); err != nil {
		t.Fatal(err)
	}
	if err := r.WithBegin(TxOptions(ser), TxOptions(rr)).Run(ctx, fn); err != nil {
		t.Fatal(err)
	}
	if err := New(fb).Run(ctx, fn); err != nil {
		t.Fatal(err)
	}
	want := []pgx.TxOptions{ser, rr, rr, {}}
	if len(fb.opts) != len(want) {
		t.Fatalf("BeginTx got %v, want %v", fb.opts, want)
	}
	for i := range want {
		if fb.opts[i] != want[i] {
			t.Errorf("BeginTx #%d got %+v, want %+v", i, fb.opts[i], want[i])
		}
	}
	err := r.WithBegin(txn.NewBeginOption[pgx.Tx]("other", "serializable")).Run(ctx, fn)
	if !errors.Is(err, txn.ErrBadOption) {
		t.Errorf("foreign begin option: %v, want ErrBadOption", err)
	}
}
