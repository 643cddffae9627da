package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.mongodb.org/mongo-driver/v2/mongo/readconcern"
	"go.mongodb.org/mongo-driver/v2/x/mongo/driver/connstring"

	"github.com/txnkit/txn"
	"github.com/txnkit/txn/backends/txnmongo"
)

// mongoStore is the Store of MongoDB, through txnmongo: accounts and ledger
// are collections, a transfer is a multi-document transaction, and
// conflicting transfers fail with WriteConflict (112), labelled
// TransientTransactionError.
type mongoStore struct {
	client   *mongo.Client
	accounts *mongo.Collection
	ledger   *mongo.Collection
	// txOpts are the transaction options (read concern) of every transfer.
	txOpts *options.TransactionOptionsBuilder
	// begin passes txOpts to every Runner of the store.
	begin []txn.BeginOption[*mongo.Session]
}

// openMongo connects to the replica set c.dsn names. The collections live
// in the URI's database, or "test".
func openMongo(ctx context.Context, c *config) (Store, error) {
	cs, err := connstring.ParseAndValidate(c.dsn)
	if err != nil {
		return nil, fmt.Errorf("mongodb: --dsn: %w", err)
	}
	opts := options.Client().ApplyURI(c.dsn)
	if !cs.MaxPoolSizeSet {
		opts.SetMaxPoolSize(uint64(c.connections()))
	}
	client, err := mongo.Connect(opts)
	if err != nil {
		return nil, fmt.Errorf("mongodb: %w", err)
	}
	if err := client.Ping(ctx, nil); err != nil {
		_ = client.Disconnect(context.Background())
		var se mongo.ServerError
		if errors.As(err, &se) {
			return nil, fmt.Errorf("mongodb: reached %v, but the server refused the connection (authentication or user; fix --dsn or TXN_MONGODB_URI): %w", cs.Hosts, err)
		}
		return nil, fmt.Errorf("mongodb: cannot reach %v (set --dsn or TXN_MONGODB_URI to a replica set): %w", cs.Hosts, err)
	}
	dbName := cs.Database
	if dbName == "" {
		dbName = "test"
	}
	db := client.Database(dbName)
	s := &mongoStore{
		client:   client,
		accounts: db.Collection(c.tablePrefix + "accounts"),
		ledger:   db.Collection(c.tablePrefix + "ledger"),
	}
	if c.isolation == "snapshot" {
		s.txOpts = options.Transaction().SetReadConcern(readconcern.Snapshot())
		s.begin = []txn.BeginOption[*mongo.Session]{txnmongo.TxOptions(s.txOpts)}
	}
	return s, nil
}

// Setup implements Store. Both collections are created before the run,
// since servers before 4.4 cannot create them inside a transaction.
func (s *mongoStore) Setup(ctx context.Context, accounts int) error {
	db := s.accounts.Database()
	for _, coll := range []*mongo.Collection{s.accounts, s.ledger} {
		if err := coll.Drop(ctx); err != nil {
			return fmt.Errorf("drop %s: %w", coll.Name(), err)
		}
		if err := db.CreateCollection(ctx, coll.Name()); err != nil {
			return fmt.Errorf("create %s: %w", coll.Name(), err)
		}
	}
	return insertAccounts(ctx, accounts, 1000, func(ctx context.Context, ids []int64) error {
		docs := make([]any, len(ids))
		for i, id := range ids {
			docs[i] = bson.D{{Key: "_id", Value: id}, {Key: "balance", Value: int64(initialBalance)}}
		}
		_, err := s.accounts.InsertMany(ctx, docs)
		return err
	})
}

// Bank implements Store.
func (s *mongoStore) Bank(opts ...runnerOption) (TransferFunc, func() txn.AdmissionStats) {
	r := txnmongo.New(s.client, opts...).WithBegin(s.begin...)
	return func(ctx context.Context, t transfer, callOpts ...callOption) error {
		return r.Run(ctx, func(ctx context.Context, _ *mongo.Session) error {
			return s.transfer(ctx, t)
		}, callOpts...)
	}, r.AdmissionStats
}

// Plain implements Store: a session, StartTransaction, the transfer,
// CommitTransaction, with no retry (not even the driver's
// WithTransaction loop).
func (s *mongoStore) Plain() TransferFunc {
	return func(ctx context.Context, t transfer, _ ...callOption) error {
		sess, err := s.client.StartSession()
		if err != nil {
			return fmt.Errorf("start session: %w", err)
		}
		defer sess.EndSession(context.WithoutCancel(ctx))
		var txOpts []options.Lister[options.TransactionOptions]
		if s.txOpts != nil {
			txOpts = append(txOpts, s.txOpts)
		}
		if err := sess.StartTransaction(txOpts...); err != nil {
			return fmt.Errorf("start transaction: %w", err)
		}
		sctx := mongo.NewSessionContext(ctx, sess)
		if err := s.transfer(sctx, t); err != nil {
			actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), plainRollbackTimeout)
			_ = sess.AbortTransaction(actx)
			cancel()
			return err
		}
		if err := sess.CommitTransaction(ctx); err != nil {
			var le mongo.LabeledError
			unknown := errors.As(err, &le) && le.HasErrorLabel("UnknownTransactionCommitResult") || mongo.IsNetworkError(err)
			return commitFailed(err, !unknown)
		}
		return nil
	}
}

// transfer is the body of a transfer, in the transaction of ctx's session.
func (s *mongoStore) transfer(ctx context.Context, t transfer) error {
	first, second := t.order()
	balances := map[int64]int64{}
	for _, id := range [2]int64{first, second} {
		var doc struct {
			Balance int64 `bson:"balance"`
		}
		if err := s.accounts.FindOne(ctx, bson.D{{Key: "_id", Value: id}}).Decode(&doc); err != nil {
			return fmt.Errorf("read balance %d: %w", id, err)
		}
		balances[id] = doc.Balance
	}
	if balances[t.from] < t.amount {
		return txn.Permanent(errInsufficientFunds)
	}
	for _, id := range [2]int64{first, second} {
		upd := bson.D{{Key: "$inc", Value: bson.D{{Key: "balance", Value: t.delta(id)}}}}
		if _, err := s.accounts.UpdateOne(ctx, bson.D{{Key: "_id", Value: id}}, upd); err != nil {
			return fmt.Errorf("update balance %d: %w", id, err)
		}
	}
	doc := bson.D{{Key: "from_id", Value: t.from}, {Key: "to_id", Value: t.to}, {Key: "amount", Value: t.amount}}
	if _, err := s.ledger.InsertOne(ctx, doc); err != nil {
		return fmt.Errorf("insert ledger row: %w", err)
	}
	return nil
}

// Check implements Store. The ledger is replayed in the client: one pass
// over the accounts and two grouped sums over the ledger.
func (s *mongoStore) Check(ctx context.Context) (totals, error) {
	var t totals
	cur, err := s.accounts.Find(ctx, bson.D{})
	if err != nil {
		return t, fmt.Errorf("read accounts: %w", err)
	}
	var accounts []struct {
		ID      int64 `bson:"_id"`
		Balance int64 `bson:"balance"`
	}
	if err := cur.All(ctx, &accounts); err != nil {
		return t, fmt.Errorf("read accounts: %w", err)
	}
	in, err := s.sumBy(ctx, "$to_id")
	if err != nil {
		return t, err
	}
	out, err := s.sumBy(ctx, "$from_id")
	if err != nil {
		return t, err
	}
	for _, a := range accounts {
		t.sum += a.Balance
		t.accounts++
		if a.Balance != initialBalance+in[a.ID]-out[a.ID] {
			t.replayMismatches++
		}
	}
	if t.ledgerRows, err = s.ledger.CountDocuments(ctx, bson.D{}); err != nil {
		return t, fmt.Errorf("count ledger rows: %w", err)
	}
	return t, nil
}

// sumBy returns the ledger's amounts summed by the account in field.
func (s *mongoStore) sumBy(ctx context.Context, field string) (map[int64]int64, error) {
	cur, err := s.ledger.Aggregate(ctx, mongo.Pipeline{
		{{Key: "$group", Value: bson.D{{Key: "_id", Value: field}, {Key: "s", Value: bson.D{{Key: "$sum", Value: "$amount"}}}}}},
	})
	if err != nil {
		return nil, fmt.Errorf("replay ledger: %w", err)
	}
	var rows []struct {
		ID  int64 `bson:"_id"`
		Sum int64 `bson:"s"`
	}
	if err := cur.All(ctx, &rows); err != nil {
		return nil, fmt.Errorf("replay ledger: %w", err)
	}
	m := make(map[int64]int64, len(rows))
	for _, r := range rows {
		m[r.ID] = r.Sum
	}
	return m, nil
}

// Code implements Store: the server's error code and name.
func (s *mongoStore) Code(err error) string {
	var se mongo.ServerError
	if errors.As(err, &se) {
		var ce mongo.CommandError
		if errors.As(err, &ce) {
			if ce.Name != "" {
				return strconv.Itoa(int(ce.Code)) + " " + ce.Name
			}
			return strconv.Itoa(int(ce.Code))
		}
		var we mongo.WriteException
		if errors.As(err, &we) && len(we.WriteErrors) > 0 {
			return strconv.Itoa(we.WriteErrors[0].Code)
		}
	}
	if mongo.IsNetworkError(err) {
		return "network error"
	}
	return ""
}

// Close implements Store.
func (s *mongoStore) Close() error {
	return s.client.Disconnect(context.Background())
}
