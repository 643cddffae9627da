module github.com/txnkit/txn/backends/txnmongo

go 1.24.0

require (
	github.com/stretchr/testify v1.12.1
	github.com/txnkit/txn v0.0.0
	github.com/txnkit/txn/internal/mongotest v0.0.0
	go.mongodb.org/mongo-driver/v2 v2.8.2
	go.uber.org/goleak v1.3.0
)

require (
	github.com/klauspost/compress v1.17.6 // indirect
	github.com/xdg-go/pbkdf2 v1.0.0 // indirect
	github.com/xdg-go/scram v1.2.0 // indirect
	github.com/xdg-go/stringprep v1.0.4 // indirect
	github.com/youmark/pkcs8 v0.0.0-20240726163527-a2c0da244d78 // indirect
	go.yaml.in/yaml/v3 v3.0.5 // indirect
	golang.org/x/crypto v0.33.0 // indirect
	golang.org/x/sync v0.11.0 // indirect
	golang.org/x/text v0.22.0 // indirect
)

// The test server lives in its own module; only this module's tests import
// it. Both replaces are for development in this repository.
replace github.com/txnkit/txn => ../..

replace github.com/txnkit/txn/internal/mongotest => ../../internal/mongotest
