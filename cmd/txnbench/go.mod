module github.com/txnkit/txn/cmd/txnbench

go 1.24

require github.com/txnkit/txn v0.0.0

replace github.com/txnkit/txn => ../..
