package txnent

import "entgo.io/ent/dialect"

// NewTx wraps a transaction begun outside any Runner, for the shared test
// scenarios' competing transactions.
func NewTx(tx dialect.Tx, dialectName string) *Tx { return &Tx{tx: tx, dialect: dialectName} }

// Unwrap returns the transaction t wraps, which a test begun outside any
// Runner ends itself.
func Unwrap(t *Tx) dialect.Tx { return t.tx }
