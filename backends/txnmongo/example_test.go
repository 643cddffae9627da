package txnmongo_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.mongodb.org/mongo-driver/v2/mongo/readconcern"

	"github.com/txnkit/txn"
	"github.com/txnkit/txn/backends/txnmongo"
)

// A transfer between two accounts, retried on write conflicts. The
// examples connect to MONGODB_URI, a replica set (in this package's tests,
// the wire-protocol test server).
func Example() {
	ctx := context.Background()
	client, err := mongo.Connect(options.Client().ApplyURI(os.Getenv("MONGODB_URI")))
	if err != nil {
		log.Fatal(err)
	}
	defer func() { _ = client.Disconnect(ctx) }()
	accounts := client.Database("example").Collection("accounts")
	if _, err := accounts.InsertMany(ctx, []any{
		bson.M{"_id": "alice", "balance": 100},
		bson.M{"_id": "bob", "balance": 0},
	}); err != nil {
		log.Fatal(err)
	}

	// Build the Runner once and share it.
	r := txnmongo.New(client, txn.MaxAttempts(10))
	err = r.Run(ctx, func(ctx context.Context, _ *mongo.Session) error {
		// ctx is bound to the Run's session: these updates are one
		// transaction.
		if _, err := accounts.UpdateOne(ctx, bson.M{"_id": "alice"}, bson.M{"$inc": bson.M{"balance": -30}}); err != nil {
			return err
		}
		_, err := accounts.UpdateOne(ctx, bson.M{"_id": "bob"}, bson.M{"$inc": bson.M{"balance": 30}})
		return err
	})
	switch {
	case errors.Is(err, txn.ErrCommitUnknown):
		// The commit may or may not have happened: check before doing it
		// again.
		log.Print("transfer may or may not have happened")
	case err != nil:
		log.Fatal(err)
	}

	cur, err := accounts.Find(ctx, bson.M{}, options.Find().SetSort(bson.M{"_id": 1}))
	if err != nil {
		log.Fatal(err)
	}
	var docs []struct {
		ID      string `bson:"_id"`
		Balance int
	}
	if err := cur.All(ctx, &docs); err != nil {
		log.Fatal(err)
	}
	for _, d := range docs {
		fmt.Println(d.ID, d.Balance)
	}
	// Output:
	// alice 70
	// bob 30
}

// Transaction options: snapshot reads for every Run of the Runner, majority
// reads through a view of it. Unset fields keep the defaults, primary read
// preference and majority write concern.
func ExampleTxOptions() {
	ctx := context.Background()
	client, err := mongo.Connect(options.Client().ApplyURI(os.Getenv("MONGODB_URI")))
	if err != nil {
		log.Fatal(err)
	}
	defer func() { _ = client.Disconnect(ctx) }()
	orders := client.Database("example_options").Collection("orders")
	if _, err := orders.InsertMany(ctx, []any{bson.M{"amount": 5}, bson.M{"amount": 7}}); err != nil {
		log.Fatal(err)
	}

	r := txnmongo.New(client).WithBegin(txnmongo.TxOptions(options.Transaction().SetReadConcern(readconcern.Snapshot())))
	majority := r.WithBegin(txnmongo.TxOptions(options.Transaction().SetReadConcern(readconcern.Majority())))
	total, err := txn.Do(ctx, majority, func(ctx context.Context, _ *mongo.Session) (int, error) {
		cur, err := orders.Aggregate(ctx, mongo.Pipeline{
			{{Key: "$group", Value: bson.M{"_id": nil, "total": bson.M{"$sum": "$amount"}}}},
		})
		if err != nil {
			return 0, err
		}
		var out []struct{ Total int }
		if err := cur.All(ctx, &out); err != nil || len(out) == 0 {
			return 0, err
		}
		return out[0].Total, nil
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("total:", total)
	// Output: total: 12
}

// Classify can be wrapped: here a duplicate key is treated as a lost race
// (another request inserted the same order number) and retried.
func ExampleClassify() {
	classify := func(err error) txn.Class {
		if mongo.IsDuplicateKeyError(err) {
			return txn.ClassRetryable
		}
		return txnmongo.Classify(err)
	}
	fmt.Println(classify(mongo.CommandError{Code: 112, Labels: []string{"TransientTransactionError"}}))
	fmt.Println(classify(mongo.CommandError{Code: 64, Labels: []string{"UnknownTransactionCommitResult"}}))
	fmt.Println(classify(mongo.CommandError{Code: 50, Labels: []string{"UnknownTransactionCommitResult"}}))
	fmt.Println(classify(mongo.WriteException{WriteErrors: mongo.WriteErrors{{Code: 11000}}}))
	fmt.Println(classify(mongo.CommandError{Code: 388}))
	// Output:
	// retryable
	// commit-retryable
	// ambiguous
	// retryable
	// permanent
}

// A repository method that runs its own Run joins the caller's transaction
// when called inside one; OnCommit work runs once, after the commit.
func Example_nested() {
	ctx := context.Background()
	client, err := mongo.Connect(options.Client().ApplyURI(os.Getenv("MONGODB_URI")))
	if err != nil {
		log.Fatal(err)
	}
	defer func() { _ = client.Disconnect(ctx) }()
	db := client.Database("example_nested")
	r := txnmongo.New(client)

	// addAudit may be called on its own or inside another Run.
	addAudit := func(ctx context.Context, what string) error {
		return r.Run(ctx, func(ctx context.Context, _ *mongo.Session) error {
			_, err := db.Collection("audit").InsertOne(ctx, bson.M{"what": what})
			return err
		})
	}

	err = r.Run(ctx, func(ctx context.Context, _ *mongo.Session) error {
		if _, err := db.Collection("orders").InsertOne(ctx, bson.M{"_id": 42}); err != nil {
			return err
		}
		if err := addAudit(ctx, "order 42"); err != nil { // same transaction
			return err
		}
		return txn.OnCommit(ctx, func() { fmt.Println("order 42 committed") })
	})
	if err != nil {
		log.Fatal(err)
	}
	n, err := db.Collection("audit").CountDocuments(ctx, bson.M{})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("audit entries:", n)
	// Output:
	// order 42 committed
	// audit entries: 1
}
