package txnsqlx_test

import (
	"testing"

	"github.com/jmoiron/sqlx"
	"github.com/txnkit/txn/internal/integrationtest"
)

// TestScenarios runs the shared scenarios (see integrationtest.RunAll) on
// PostgreSQL, MariaDB and SQLite.
func TestScenarios(t *testing.T) {
	var dbs []integrationtest.Opener[*sqlx.Tx]
	for _, d := range dialects {
		dbs = append(dbs, integrationtest.Opener[*sqlx.Tx]{Name: d.Name, Open: func(t *testing.T) integrationtest.DB[*sqlx.Tx] { return d.suiteDB(t) }})
	}
	integrationtest.RunAll(t, prefix, dbs)
}

// TestConflictRetriedFallback: txnsqlx.Classify alone retries
// PostgreSQL's lost race; see integrationtest.ConflictRetried.
func TestConflictRetriedFallback(t *testing.T) {
	integrationtest.ConflictRetried(t, pgFallback.suiteDB(t), prefix)
}

// TestCommitBoundedThroughSilentLink: a COMMIT that the link never
// delivers ends with txn.ErrCommitUnknown at the caller's deadline; see
// integrationtest.CommitBoundedThroughSilentLink.
func TestCommitBoundedThroughSilentLink(t *testing.T) {
	t.Run("postgres", func(t *testing.T) {
		dsn, p := integrationtest.ProxiedPostgresDSN(t)
		db := &sqlxDB{d: pgDialect, db: openPostgresAt(t, dsn)}
		integrationtest.CommitBoundedThroughSilentLink(t, db, p, prefix)
	})
	t.Run("mariadb", func(t *testing.T) {
		dsn, p := integrationtest.ProxiedMySQLDSN(t)
		db := &sqlxDB{d: mysqlDialect, db: openMySQLAt(t, dsn)}
		integrationtest.CommitBoundedThroughSilentLink(t, db, p, prefix)
	})
}
