// Package testdb holds what every real-server test of the project agrees
// on: where the servers are and what to do when one cannot be reached.
package testdb

import (
	"os"
	"testing"
)

// The environment variables and default DSNs of the test servers.
const (
	// RequireEnv, set to "1" (as CI does), makes an unreachable server fail
	// the test instead of skipping it.
	RequireEnv = "TXN_REQUIRE_DBS"
	// PostgresEnv names the PostgreSQL DSN.
	PostgresEnv = "TXN_PG_DSN"
	// PostgresDefault is the PostgreSQL DSN when PostgresEnv is unset.
	PostgresDefault = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
	// MySQLEnv names the MySQL/MariaDB DSN (go-sql-driver format).
	MySQLEnv = "TXN_MYSQL_DSN"
	// MySQLDefault is the MySQL/MariaDB DSN when MySQLEnv is unset.
	MySQLDefault = "root@tcp(127.0.0.1:3306)/test"
)

// DSN returns the value of the environment variable env, or def when it is
// unset or empty.
func DSN(env, def string) string {
	if v := os.Getenv(env); v != "" {
		return v
	}
	return def
}

// Unreachable ends tb because the server named what, configured by env,
// could not be reached (err): it skips the test with a message naming the
// variable, or fails it when RequireEnv is "1".
func Unreachable(tb testing.TB, what, env string, err error) {
	tb.Helper()
	if os.Getenv(RequireEnv) == "1" {
		tb.Fatalf("%s from %s is required because %s=1, and it cannot be reached: %v", what, env, RequireEnv, err)
	}
	tb.Skipf("%s not reachable; set %s to run this test: %v", what, env, err)
}
