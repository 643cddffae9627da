package txnpgx_test

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/txnkit/txn"
	"github.com/txnkit/txn/backends/txnpgx"
	"github.com/txnkit/txn/txntest"
)

// TestObserverSeesARealSerializationFailure: a real 40001 is one retry of
// class retryable carrying the PostgreSQL error, between two attempts, and
// the Run's one terminal event counts them; the slog line of the retry
// names the operation and the SQLSTATE's message.
func TestObserverSeesARealSerializationFailure(t *testing.T) {
	pool := newPool(t, nil)
	tbl := counterTable(t, pool)
	var buf bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	rec := &txntest.Recorder{}
	r := txnpgx.New(pool, txn.WithObserver(txn.Observers(rec, txn.SlogObserver(logger))), txn.Operation("bump"))
	rr := r.WithBegin(txnpgx.TxOptions(pgx.TxOptions{IsoLevel: pgx.RepeatableRead}))
	ctx := testCtx(t)
	n := 0
	require.NoError(t, rr.Run(ctx, func(ctx context.Context, tx pgx.Tx) error {
		var v int
		if err := tx.QueryRow(ctx, "SELECT v FROM "+tbl+" WHERE id = 1").Scan(&v); err != nil {
			return err
		}
		if n++; n == 1 {
			concurrentUpdate(t, pool, tbl, 1)
		}
		_, err := tx.Exec(ctx, "UPDATE "+tbl+" SET v = $1 WHERE id = 1", v+1)
		return err
	}))
	assert.Equal(t, "attempt 1, retry retryable, attempt 2, committed", rec.String())
	require.Len(t, rec.Retries(), 1)
	assert.Equal(t, "40001", sqlState(rec.Retries()[0].Err))
	assert.Equal(t, 101, queryInt(t, pool, "SELECT v FROM "+tbl+" WHERE id = 1"))
	line := buf.String()
	assert.Equal(t, 1, strings.Count(line, "\n"), line)
	assert.Contains(t, line, `msg="txn retry" attempt=1 class=retryable`)
	assert.Contains(t, line, "SQLSTATE 40001")
	assert.Contains(t, line, "operation=bump")
}

// TestCheckRerunAndSequences: a sequence is not rolled back with the
// transaction, so a correct fn that inserts a row with a serial id gets
// another id after a retry, and a report that includes the id tells it
// apart from the run without faults (txntest's documentation says to leave
// such values out of the report); without the id the check passes.
func TestCheckRerunAndSequences(t *testing.T) {
	pool := newPool(t, nil)
	tbl := newTable(t, pool, "id serial PRIMARY KEY, item text NOT NULL")
	r := txnpgx.New(pool)
	ctx := testCtx(t)
	insert := func(ctx context.Context, tx pgx.Tx) error {
		_, err := tx.Exec(ctx, "INSERT INTO "+tbl+" (item) VALUES ('book')")
		return err
	}
	reset := txntest.Reset(func(ctx context.Context) error {
		_, err := pool.Exec(ctx, "DELETE FROM "+tbl)
		return err
	})
	rows := func(q string) func(context.Context) []string {
		return func(ctx context.Context) []string {
			out, err := pgx.CollectRows(must(pool.Query(ctx, q)), pgx.RowTo[string])
			require.NoError(t, err)
			return out
		}
	}
	err := txntest.Rerun(ctx, r, insert, rows("SELECT id::text || ':' || item FROM "+tbl), reset)
	require.Error(t, err, "the ids differ from run to run")
	assert.Contains(t, err.Error(), "not safe to re-run")
	assert.NoError(t, txntest.Rerun(ctx, r, insert, rows("SELECT item FROM "+tbl), reset))
}

func must[V any](v V, err error) V {
	if err != nil {
		panic(err)
	}
	return v
}

// TestDatabaseKeysWaitIsNotAnAdmission: a Run that waits in the database
// for a key another process holds (DatabaseKeys) waits inside BEGIN, where
// the Runner cannot tell a wait from a round trip: its observer sees the
// attempt start once the key is granted, and no Admitted event, as txn's
// documentation of Admitted says.
func TestDatabaseKeysWaitIsNotAnAdmission(t *testing.T) {
	p1, p2 := newPool(t, nil), newPool(t, nil)
	r1 := txnpgx.New(p1, txn.DatabaseKeys())
	rec := &txntest.Recorder{}
	r2 := txnpgx.New(p2, txn.DatabaseKeys(), txn.WithObserver(rec))
	ctx := testCtx(t)
	finishFirst := holdKey(t, ctx, r1, "obs-k")
	secondDone := make(chan error, 1)
	go func() {
		secondDone <- r2.Run(ctx, func(context.Context, pgx.Tx) error { return nil }, txn.Keys("obs-k"))
	}()
	for keyWaiters(t, p1, "obs-k") != 1 {
		require.NoError(t, ctx.Err(), "the second Run never waited on the advisory lock")
	}
	assert.Zero(t, rec.Attempts(), "the attempt starts once BEGIN returned, keys held")
	require.NoError(t, finishFirst())
	require.NoError(t, <-secondDone)
	assert.Equal(t, "attempt 1, committed", rec.String())
	assert.Empty(t, rec.Admissions())
}
