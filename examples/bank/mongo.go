package main

import (
	"context"
	"fmt"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/txnkit/txn"
	"github.com/txnkit/txn/backends/txnmongo"
)

// mongoBank is the bank of MongoDB: accounts are documents of one
// collection, and a transfer is a multi-document transaction. Two
// transfers writing the same account conflict: the second fails with
// WriteConflict, labelled TransientTransactionError, and txnmongo re-runs
// it.
type mongoBank struct {
	r        *txn.Runner[*mongo.Session]
	accounts *mongo.Collection
}

// openMongo connects to the replica set o.dsn names (transactions need
// one); the collection lives in the database "test".
func openMongo(o config, opts []txn.RunnerOption) (bank, func(), error) {
	client, err := mongo.Connect(options.Client().ApplyURI(orDefault(o.dsn, "TXN_MONGODB_URI", "mongodb://127.0.0.1:27017/?replicaSet=rs0")))
	if err != nil {
		return nil, nil, err
	}
	b := &mongoBank{
		r:        txnmongo.New(client, opts...),
		accounts: client.Database("test").Collection(o.table),
	}
	return b, func() { _ = client.Disconnect(context.Background()) }, nil
}

// Setup drops and creates the collection, every account holding 1000.
func (b *mongoBank) Setup(ctx context.Context, accounts int) error {
	if err := b.accounts.Drop(ctx); err != nil {
		return err
	}
	docs := make([]any, accounts)
	for i := range docs {
		docs[i] = bson.D{{Key: "_id", Value: int64(i + 1)}, {Key: "balance", Value: int64(1000)}}
	}
	_, err := b.accounts.InsertMany(ctx, docs)
	return err
}

// Transfer moves amount from account from to account to. Every operation
// is given the ctx that fn receives: that is what puts it in the
// transaction.
func (b *mongoBank) Transfer(ctx context.Context, from, to, amount int64) error {
	return b.r.Run(ctx, func(ctx context.Context, _ *mongo.Session) error {
		var acc struct {
			Balance int64 `bson:"balance"`
		}
		if err := b.accounts.FindOne(ctx, bson.D{{Key: "_id", Value: from}}).Decode(&acc); err != nil {
			return fmt.Errorf("read account %d: %w", from, err)
		}
		if acc.Balance < amount {
			return txn.Permanent(fmt.Errorf("account %d: %w", from, ErrInsufficientFunds))
		}
		inc := func(n int64) bson.D { return bson.D{{Key: "$inc", Value: bson.D{{Key: "balance", Value: n}}}} }
		if _, err := b.accounts.UpdateOne(ctx, bson.D{{Key: "_id", Value: from}}, inc(-amount)); err != nil {
			return fmt.Errorf("debit account %d: %w", from, err)
		}
		if _, err := b.accounts.UpdateOne(ctx, bson.D{{Key: "_id", Value: to}}, inc(amount)); err != nil {
			return fmt.Errorf("credit account %d: %w", to, err)
		}
		return nil
	})
}

// Total returns the sum of all balances, read in one transaction.
func (b *mongoBank) Total(ctx context.Context) (int64, error) {
	return txn.Do(ctx, b.r, func(ctx context.Context, _ *mongo.Session) (int64, error) {
		cur, err := b.accounts.Find(ctx, bson.D{})
		if err != nil {
			return 0, err
		}
		var accs []struct {
			Balance int64 `bson:"balance"`
		}
		if err := cur.All(ctx, &accs); err != nil {
			return 0, err
		}
		var total int64
		for _, a := range accs {
			total += a.Balance
		}
		return total, nil
	})
}
