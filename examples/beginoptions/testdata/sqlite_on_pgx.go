// A SQLite begin option given to a pgx Runner must not compile.
package main

import (
	"github.com/txnkit/txn/backends/txnpgx"
	"github.com/txnkit/txn/backends/txnsqlite"
)

func main() {
	r := txnpgx.New(nil)
	_ = r.WithBegin(txnsqlite.Deferred())
}
