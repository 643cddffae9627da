package txnsqlx_test

import (
	"context"
	"database/sql"
	"errors"
	"testing"

	"github.com/jmoiron/sqlx"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/txnkit/txn/backends/txnsql"
	"github.com/txnkit/txn/internal/integrationtest"
)

// sqlcDBTX is the interface sqlc generates for database/sql.
type sqlcDBTX interface {
	ExecContext(context.Context, string, ...interface{}) (sql.Result, error)
	PrepareContext(context.Context, string) (*sql.Stmt, error)
	QueryContext(context.Context, string, ...interface{}) (*sql.Rows, error)
	QueryRowContext(context.Context, string, ...interface{}) *sql.Row
}

// queries stands for a sqlc-generated Queries.
type queries struct{ db sqlcDBTX }

func (q *queries) insert(ctx context.Context, stmt string) error {
	_, err := q.db.ExecContext(ctx, stmt)
	return err
}

// TestSqlcQueriesOnTheHandle: sqlc's generated New takes the *sqlx.Tx fn
// receives as it is, and so does txnsql.TxOr, which returns that handle
// rather than the pool it is given; their statements are part of the
// Run's transaction (undone with it). txnsql.Tx finds no *sql.Tx in a
// txnsqlx Run's context, which carries an *sqlx.Tx, and says so instead of
// handing out the pool.
func TestSqlcQueriesOnTheHandle(t *testing.T) {
	forEach(t, dialects, func(t *testing.T, d dialect) {
		db := d.suiteDB(t)
		ctx := integrationtest.Context(t)
		tbl := integrationtest.CreateTable(t, db, prefix, "name VARCHAR(64) PRIMARY KEY")
		errLater := errors.New("later")
		err := db.Runner().Run(ctx, func(ctx context.Context, tx *sqlx.Tx) error {
			q := &queries{db: tx}
			if err := q.insert(ctx, "INSERT INTO "+tbl+" (name) VALUES ('a')"); err != nil {
				return err
			}
			joined := &queries{db: txnsql.TxOr(ctx, db.(*sqlxDB).db)}
			if err := joined.insert(ctx, "INSERT INTO "+tbl+" (name) VALUES ('b')"); err != nil {
				return err
			}
			_, err := txnsql.Tx(ctx)
			assert.Error(t, err, "no *sql.Tx in a txnsqlx Run")
			return errLater
		})
		require.ErrorIs(t, err, errLater)
		n, err := db.Ints(ctx, "SELECT COUNT(*) FROM "+tbl)
		require.NoError(t, err)
		assert.Equal(t, []int{0}, n, "rolled back with the Run")
	})
}
