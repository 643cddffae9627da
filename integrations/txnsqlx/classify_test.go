package txnsqlx_test

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jmoiron/sqlx"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/txnkit/txn"
	"github.com/txnkit/txn/integrations/txnsqlx"
)

// TestClassifyFallback is a unit test of the fallback classifier.
func TestClassifyFallback(t *testing.T) {
	assert.Equal(t, txn.ClassPermanent, txnsqlx.Classify(nil))
	assert.Equal(t, txn.ClassConnLost, txnsqlx.Classify(fmt.Errorf("x: %w", driver.ErrBadConn)))
	assert.Equal(t, txn.ClassRetryable, txnsqlx.Classify(fmt.Errorf("x: %w", &pgconn.PgError{Code: "40001"})))
	assert.Equal(t, txn.ClassPermanent, txnsqlx.Classify(&pgconn.PgError{Code: "23505"}))
	assert.Equal(t, txn.ClassPermanent, txnsqlx.Classify(fmt.Errorf("x: %w", (*pgconn.PgError)(nil))))
}

// TestBadInput covers a nil handle, foreign begin options and fn that
// commits the transaction itself.
func TestBadInput(t *testing.T) {
	ctx := context.Background()
	noop := func(context.Context, *sqlx.Tx) error { return nil }
	assert.ErrorIs(t, txnsqlx.New(nil).Run(ctx, noop), txn.ErrNilRunner)

	db := openSQLite(t)
	r := txnsqlx.New(db)
	assert.ErrorIs(t, r.WithBegin(txn.NewBeginOption[*sqlx.Tx]("other", 42)).Run(ctx, noop), txn.ErrBadOption)
	require.NoError(t, r.WithBegin(txnsqlx.TxOptions(sql.TxOptions{ReadOnly: true})).Run(ctx, noop))

	calls := 0
	err := r.Run(ctx, func(ctx context.Context, tx *sqlx.Tx) error {
		calls++
		return tx.Commit()
	})
	assert.ErrorIs(t, err, txn.ErrFnFinishedTx)
	assert.Equal(t, 1, calls)
}
