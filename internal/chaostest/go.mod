module github.com/txnkit/txn/internal/chaostest

go 1.24.0

require (
	github.com/go-sql-driver/mysql v1.10.1
	github.com/jackc/pgx/v5 v5.8.0
	github.com/stretchr/testify v1.12.1
	github.com/txnkit/txn v0.0.0
	github.com/txnkit/txn/backends/txnmysql v0.0.0
	github.com/txnkit/txn/backends/txnpgx v0.0.0
	go.uber.org/goleak v1.3.0
)

require (
	filippo.io/edwards25519 v1.2.0 // indirect
	github.com/jackc/pgpassfile v1.0.0 // indirect
	github.com/jackc/pgservicefile v0.0.0-20240606120523-5a60cdf6a761 // indirect
	github.com/jackc/puddle/v2 v2.2.2 // indirect
	go.yaml.in/yaml/v3 v3.0.5 // indirect
	golang.org/x/sync v0.17.0 // indirect
	golang.org/x/text v0.29.0 // indirect
)

replace (
	github.com/txnkit/txn => ../..
	github.com/txnkit/txn/backends/txnmysql => ../../backends/txnmysql
	github.com/txnkit/txn/backends/txnpgx => ../../backends/txnpgx
)
