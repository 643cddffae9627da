// Package schema holds the ent schema of txnent's tests and examples.
package schema

import (
	"entgo.io/ent"
	"entgo.io/ent/dialect/entsql"
	"entgo.io/ent/schema"
	"entgo.io/ent/schema/field"
)

// Account is a bank account with a balance.
type Account struct {
	ent.Schema
}

// Annotations names the table, prefixed so that other test packages can
// share the database.
func (Account) Annotations() []schema.Annotation {
	return []schema.Annotation{entsql.Annotation{Table: "txnent_accounts"}}
}

// Fields of the Account.
func (Account) Fields() []ent.Field {
	return []ent.Field{
		field.Int64("balance").Default(0),
	}
}

// Note is a line of a log that the tests write inside transactions.
type Note struct {
	ent.Schema
}

// Annotations names the table.
func (Note) Annotations() []schema.Annotation {
	return []schema.Annotation{entsql.Annotation{Table: "txnent_notes"}}
}

// Fields of the Note.
func (Note) Fields() []ent.Field {
	return []ent.Field{
		field.String("text"),
	}
}

// Transfer is a ledger row: amount moved from account Src to account Dst.
type Transfer struct {
	ent.Schema
}

// Annotations names the table.
func (Transfer) Annotations() []schema.Annotation {
	return []schema.Annotation{entsql.Annotation{Table: "txnent_transfers"}}
}

// Fields of the Transfer.
func (Transfer) Fields() []ent.Field {
	return []ent.Field{
		field.Int("src"),
		field.Int("dst"),
		field.Int64("amount"),
	}
}
