module github.com/txnkit/txn/backends/txnpgx

go 1.24

require github.com/txnkit/txn v0.0.0

replace github.com/txnkit/txn => ../..
