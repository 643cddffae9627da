module github.com/txnkit/txn/integrations/servicetest

go 1.24.0

replace github.com/txnkit/txn => ../..

replace github.com/txnkit/txn/integrations/internal/grpctest => ../internal/grpctest

replace github.com/txnkit/txn/backends/txnpgx => ../../backends/txnpgx

replace github.com/txnkit/txn/backends/txnmysql => ../../backends/txnmysql

replace github.com/txnkit/txn/backends/txnsqlite => ../../backends/txnsqlite

replace github.com/txnkit/txn/integrations/txngrpc => ../txngrpc

require (
	github.com/go-sql-driver/mysql v1.10.1
	github.com/jackc/pgx/v5 v5.8.0
	github.com/stretchr/testify v1.12.1
	github.com/txnkit/txn v0.0.0
	github.com/txnkit/txn/backends/txnmysql v0.0.0
	github.com/txnkit/txn/backends/txnpgx v0.0.0
	github.com/txnkit/txn/backends/txnsqlite v0.0.0
	github.com/txnkit/txn/integrations/internal/grpctest v0.0.0
	github.com/txnkit/txn/integrations/txngrpc v0.0.0
	go.uber.org/goleak v1.3.0
	google.golang.org/grpc v1.80.0
	google.golang.org/protobuf v1.36.11
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
	go.yaml.in/yaml/v3 v3.0.5 // indirect
	golang.org/x/exp v0.0.0-20251023183803-a4bb9ffd2546 // indirect
	golang.org/x/net v0.49.0 // indirect
	golang.org/x/sync v0.19.0 // indirect
	golang.org/x/sys v0.40.0 // indirect
	golang.org/x/text v0.33.0 // indirect
	google.golang.org/genproto/googleapis/rpc v0.0.0-20260120221211-b8f7ae30c516 // indirect
	modernc.org/libc v1.67.6 // indirect
	modernc.org/mathutil v1.7.1 // indirect
	modernc.org/memory v1.11.0 // indirect
	modernc.org/sqlite v1.46.1 // indirect
)
