// Each backend's begin options on its own Runner compile: the control that
// shows sqlite_on_pgx.go fails for the reason under test.
package main

import (
	"github.com/jackc/pgx/v5"
	"github.com/txnkit/txn/backends/txnpgx"
	"github.com/txnkit/txn/backends/txnsqlite"
)

func main() {
	_ = txnpgx.New(nil).WithBegin(txnpgx.TxOptions(pgx.TxOptions{IsoLevel: pgx.Serializable}))
	_ = txnsqlite.New(nil).WithBegin(txnsqlite.Deferred())
}
