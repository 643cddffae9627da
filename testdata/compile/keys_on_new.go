// Keys is a per-call option: giving it to New must not compile.
package main

import "github.com/txnkit/txn"

func main() {
	var b txn.Backend[int]
	_ = txn.New(b, txn.Keys("x"))
}
