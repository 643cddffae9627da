module github.com/txnkit/txn/cmd/txnbench

go 1.24.0

require (
	github.com/go-sql-driver/mysql v1.10.1
	github.com/jackc/pgx/v5 v5.8.0
	github.com/stretchr/testify v1.12.1
	github.com/txnkit/txn v0.0.0
	github.com/txnkit/txn/backends/txnmysql v0.0.0
	github.com/txnkit/txn/backends/txnpgx v0.0.0
	github.com/txnkit/txn/backends/txnsqlite v0.0.0
	go.uber.org/goleak v1.3.0
	modernc.org/sqlite v1.46.1
)

require (
	github.com/klauspost/compress v1.17.6 // indirect
	github.com/xdg-go/pbkdf2 v1.0.0 // indirect
	github.com/xdg-go/scram v1.2.0 // indirect
	github.com/xdg-go/stringprep v1.0.4 // indirect
	github.com/youmark/pkcs8 v0.0.0-20240726163527-a2c0da244d78 // indirect
	go.mongodb.org/mongo-driver/v2 v2.8.2
	golang.org/x/crypto v0.33.0 // indirect
)

require (
	filippo.io/edwards25519 v1.2.0 // indirect
	github.com/dustin/go-humanize v1.0.1 // indirect
	github.com/google/uuid v1.6.0 // indirect
	github.com/jackc/pgpassfile v1.0.0 // indirect
	github.com/jackc/pgservicefile v0.0.0-20240606120523-5a60cdf6a761 // indirect
	github.com/jackc/puddle/v2 v2.2.2 // indirect
	github.com/mattn/go-isatty v0.0.20 // indirect
	github.com/ncruces/go-strftime v1.0.0 // indirect
	github.com/remyoudompheng/bigfft v0.0.0-20230129092748-24d4a6f8daec // indirect
	github.com/txnkit/txn/backends/txnmongo v0.0.0
	go.yaml.in/yaml/v3 v3.0.5 // indirect
	golang.org/x/exp v0.0.0-20251023183803-a4bb9ffd2546 // indirect
	golang.org/x/sync v0.17.0 // indirect
	golang.org/x/sys v0.37.0 // indirect
	golang.org/x/text v0.29.0 // indirect
	modernc.org/libc v1.67.6 // indirect
	modernc.org/mathutil v1.7.1 // indirect
	modernc.org/memory v1.11.0 // indirect
)

replace github.com/txnkit/txn => ../..

replace github.com/txnkit/txn/backends/txnsqlite => ../../backends/txnsqlite

replace github.com/txnkit/txn/backends/txnmysql => ../../backends/txnmysql

replace github.com/txnkit/txn/backends/txnpgx => ../../backends/txnpgx

replace github.com/txnkit/txn/backends/txnmongo => ../../backends/txnmongo

replace github.com/txnkit/txn/internal/mongotest => ../../internal/mongotest
