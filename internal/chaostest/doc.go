// Package chaostest holds the project's soak tests against real servers,
// PostgreSQL through txnpgx and MariaDB through txnmysql: a bank workload
// run through internal/faultproxy while it cuts and stalls connections at
// random, and private server instances restarted under load. It exports
// nothing; its tests are what matter (go test -race -v ./internal/chaostest
// prints their figures).
package chaostest
