// Package servicetest holds no code of its own: its tests run txnhttp,
// txngrpc and the repository helpers (txnpgx.Tx, txnsql.Tx) over real HTTP
// and gRPC servers on loopback against real PostgreSQL, MariaDB and SQLite,
// with real serialization failures and deadlocks. It is a module of its own
// because the core module, where txnhttp and txnsql live, imports no driver.
//
// The servers are found through TXN_PG_DSN and TXN_MYSQL_DSN (see
// internal/testdb); SQLite runs on a file in a temporary directory.
package servicetest
