package txngorm_test

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"testing"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/txnkit/txn"
	"github.com/txnkit/txn/integrations/txngorm"
	"gorm.io/gorm"
)

// codeError is an error with an SQLite-style Code method.
type codeError int

func (e codeError) Error() string { return fmt.Sprintf("code %d", int(e)) }
func (e codeError) Code() int     { return int(e) }

// TestClassifyTable is a unit test of the fallback classifier's table.
func TestClassifyTable(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want txn.Class
	}{
		{"nil", nil, txn.ClassPermanent},
		{"plain", errors.New("x"), txn.ClassPermanent},
		{"bad conn", fmt.Errorf("exec: %w", driver.ErrBadConn), txn.ClassConnLost},
		{"pg 40001", &pgconn.PgError{Code: "40001"}, txn.ClassRetryable},
		{"pg 40P01 wrapped", fmt.Errorf("a: %w", &pgconn.PgError{Code: "40P01"}), txn.ClassRetryable},
		{"pg 40P01 joined", errors.Join(errors.New("a"), &pgconn.PgError{Code: "40P01"}), txn.ClassRetryable},
		{"pg 23505", &pgconn.PgError{Code: "23505"}, txn.ClassPermanent},
		{"pg typed nil", fmt.Errorf("a: %w", (*pgconn.PgError)(nil)), txn.ClassPermanent},
		{"sqlite busy", codeError(5), txn.ClassRetryable},
		{"sqlite busy snapshot", codeError(517), txn.ClassRetryable},
		{"sqlite locked", codeError(6), txn.ClassRetryable},
		{"sqlite constraint", codeError(19), txn.ClassPermanent},
		{"mysql 1213 needs txnmysql", &mysql.MySQLError{Number: 1213}, txn.ClassPermanent},
		{"gorm translated", gorm.ErrDuplicatedKey, txn.ClassPermanent},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, txngorm.Classify(tc.err))
		})
	}
}

// TestBadInput covers a nil handle, foreign begin options and fn that
// commits the transaction itself.
func TestBadInput(t *testing.T) {
	ctx := context.Background()
	noop := func(context.Context, *gorm.DB) error { return nil }
	assert.ErrorIs(t, txngorm.New(nil).Run(ctx, noop), txn.ErrNilRunner)

	db := openSQLite(t, gormConfig())
	r := txngorm.New(db)
	assert.ErrorIs(t, r.WithBegin(txn.NewBeginOption[*gorm.DB]("other", 42)).Run(ctx, noop), txn.ErrBadOption)
	require.NoError(t, r.WithBegin(txngorm.TxOptions(sql.TxOptions{ReadOnly: true})).Run(ctx, noop))

	calls := 0
	err := r.Run(ctx, func(ctx context.Context, tx *gorm.DB) error {
		calls++
		return tx.Commit().Error
	})
	assert.ErrorIs(t, err, txn.ErrFnFinishedTx)
	assert.Equal(t, 1, calls)
}
