module github.com/txnkit/txn/backends/txnmongo

go 1.24

require github.com/txnkit/txn v0.0.0

require go.mongodb.org/mongo-driver/v2 v2.8.2 // indirect

replace github.com/txnkit/txn => ../..
