module github.com/txnkit/txn

go 1.24
