// Package ent is the client that ent generates from ./schema, checked in for
// txnent's tests and examples. Regenerate it, from this directory, with
//
//	go generate .
//
// which runs the ent version that the txnent module requires. txn.go is
// not generated: it is the glue a user adds to their own generated package.
package ent

//go:generate go run entgo.io/ent/cmd/ent@v0.14.5 generate ./schema
