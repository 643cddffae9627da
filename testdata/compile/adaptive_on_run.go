// Adaptive is a Runner option: giving it to Run must not compile.
package main

import (
	"context"

	"github.com/txnkit/txn"
)

func main() {
	var b txn.Backend[int]
	r := txn.New(b)
	fn := func(context.Context, int) error { return nil }
	_ = r.Run(context.Background(), fn, txn.Adaptive(5))
}
