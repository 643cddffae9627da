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
	integrationtest.CommitBoundedOnPostgresAndMariaDB(t, prefix,
		func(t *testing.T, dsn string) integrationtest.DB[*sqlx.Tx] {
			return &sqlxDB{d: pgDialect, db: openPostgresAt(t, dsn)}
		},
		func(t *testing.T, dsn string) integrationtest.DB[*sqlx.Tx] {
			return &sqlxDB{d: mysqlDialect, db: openMySQLAt(t, dsn)}
		})
}
