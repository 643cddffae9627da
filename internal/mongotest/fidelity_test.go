package mongotest_test

// Checks of the query, update, projection and aggregation engine through
// the real driver against what mongod documents, and of the clear failure
// of what the server does not support.

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/txnkit/txn/internal/mongotest"
)

// ids runs Find with filter and opts and returns the _ids found, in order.
func ids(t *testing.T, ctx context.Context, coll *mongo.Collection, filter any, opts ...options.Lister[options.FindOptions]) []any {
	t.Helper()
	cur, err := coll.Find(ctx, filter, opts...)
	require.NoError(t, err, "find %v", filter)
	var docs []bson.M
	require.NoError(t, cur.All(ctx, &docs))
	out := []any{}
	for _, d := range docs {
		out = append(out, d["_id"])
	}
	return out
}

func orders() []any {
	return []any{
		doc("_id", int32(1), "items", bson.A{doc("sku", "a", "qty", int32(2)), doc("sku", "b", "qty", int32(5))}, "tags", bson.A{"x", "y"}, "name", "Alpha"),
		doc("_id", int32(2), "items", bson.A{doc("sku", "b", "qty", int32(1))}, "tags", bson.A{"y"}, "name", "beta"),
		doc("_id", int32(3), "items", bson.A{}, "tags", bson.A{}, "name", "Gamma", "n", 2.5),
		doc("_id", int32(4), "name", "delta", "n", int64(7)),
	}
}

func TestQueryFidelity(t *testing.T) {
	_, ctx, _, coll := setup(t)
	_, err := coll.InsertMany(ctx, orders())
	require.NoError(t, err)
	cases := []struct {
		filter any
		want   []any
	}{
		{doc("items.sku", "b"), []any{int32(1), int32(2)}},
		{doc("items.qty", doc("$gt", int32(3))), []any{int32(1)}},
		{doc("items.0.sku", "a"), []any{int32(1)}},
		{doc("items", doc("$elemMatch", doc("sku", "b", "qty", doc("$gte", int32(2))))), []any{int32(1)}},
		{doc("tags", doc("$all", bson.A{"x", "y"})), []any{int32(1)}},
		{doc("tags", doc("$size", int32(0))), []any{int32(3)}},
		{doc("tags", doc("$elemMatch", doc("$eq", "y"))), []any{int32(1), int32(2)}},
		{doc("name", doc("$regex", "^[a-z]")), []any{int32(2), int32(4)}},
		{doc("name", doc("$regex", "^a", "$options", "i")), []any{int32(1)}},
		{doc("name", bson.Regex{Pattern: "mm", Options: ""}), []any{int32(3)}},
		{doc("n", doc("$type", "number")), []any{int32(3), int32(4)}},
		{doc("n", doc("$type", "long")), []any{int32(4)}},
		{doc("tags", doc("$type", "array")), []any{int32(1), int32(2), int32(3)}},
		{doc("n", doc("$mod", bson.A{int32(3), int32(1)})), []any{int32(4)}},
		{doc("$expr", doc("$gt", bson.A{doc("$size", doc("$ifNull", bson.A{"$tags", bson.A{}})), int32(1)})), []any{int32(1)}},
		{doc("items.sku", doc("$ne", "b")), []any{int32(3), int32(4)}},
		{doc("items.sku", doc("$exists", true)), []any{int32(1), int32(2)}},
	}
	for _, c := range cases {
		assert.Equal(t, c.want, ids(t, ctx, coll, c.filter, options.Find().SetSort(doc("_id", 1))), "filter %v", c.filter)
	}
	// Sorting by an array field uses its smallest element ascending, its
	// largest descending.
	nonEmpty := doc("items.0", doc("$exists", true))
	assert.Equal(t, []any{int32(2), int32(1)}, ids(t, ctx, coll, nonEmpty, options.Find().SetSort(doc("items.qty", 1))))
	assert.Equal(t, []any{int32(1), int32(2)}, ids(t, ctx, coll, nonEmpty, options.Find().SetSort(doc("items.qty", -1))))
}

func TestProjectionFidelity(t *testing.T) {
	_, ctx, _, coll := setup(t)
	_, err := coll.InsertMany(ctx, orders())
	require.NoError(t, err)
	one := func(proj any) bson.D {
		t.Helper()
		var d bson.D
		require.NoError(t, coll.FindOne(ctx, doc("_id", 1), options.FindOne().SetProjection(proj)).Decode(&d), "projection %v", proj)
		return d
	}
	assert.Equal(t, doc("_id", int32(1), "items", bson.A{doc("sku", "a"), doc("sku", "b")}), one(doc("items.sku", 1)))
	assert.Equal(t, doc("_id", int32(1), "items", bson.A{doc("qty", int32(2)), doc("qty", int32(5))}, "name", "Alpha"), one(doc("items.sku", 0, "tags", 0)))
	assert.Equal(t, doc("name", "Alpha"), one(doc("name", 1, "_id", 0)))
	assert.Equal(t, doc("_id", int32(1)), one(doc("_id", 1)))
	assert.Equal(t, doc("_id", int32(1), "name", "Alpha", "upper", "ALPHA"), one(doc("name", 1, "upper", doc("$toUpper", "$name"))))

	for _, bad := range []struct {
		proj any
		code int32
	}{
		{doc("name", 1, "tags", 0), 31254},
		{doc("tags", 0, "name", 1), 31253},
		{doc("items", 1, "items.sku", 1), 31250},
		{doc("tags", doc("$slice", 1)), 2},
		{doc("items.$", 1), 2},
	} {
		err := coll.FindOne(ctx, doc("_id", 1), options.FindOne().SetProjection(bad.proj)).Err()
		se := serverError(t, err)
		assert.True(t, se.HasErrorCode(int(bad.code)), "projection %v: %v", bad.proj, err)
	}
}

func TestUpdateOperatorsFidelity(t *testing.T) {
	_, ctx, _, coll := setup(t)
	mustInsert(t, ctx, coll, doc("_id", 1, "a", bson.A{int32(1), int32(2), int32(3), int32(2)}, "s", doc("x", int32(1)), "old", "v"))
	apply := func(update any) bson.D {
		t.Helper()
		var d bson.D
		require.NoError(t, coll.FindOneAndUpdate(ctx, doc("_id", 1), update, options.FindOneAndUpdate().SetReturnDocument(options.After)).Decode(&d), "update %v", update)
		return d
	}
	get := func(d bson.D, k string) any {
		for _, e := range d {
			if e.Key == k {
				return e.Value
			}
		}
		return nil
	}
	assert.Equal(t, bson.A{int32(1), int32(3)}, get(apply(doc("$pull", doc("a", int32(2)))), "a"))
	assert.Equal(t, bson.A{int32(1), int32(3), int32(4)}, get(apply(doc("$addToSet", doc("a", doc("$each", bson.A{int32(3), int32(4)})))), "a"))
	assert.Equal(t, bson.A{int32(3), int32(4)}, get(apply(doc("$pop", doc("a", -1))), "a"))
	assert.Equal(t, bson.A{int32(4)}, get(apply(doc("$pull", doc("a", doc("$lt", int32(4))))), "a"))
	assert.Equal(t, bson.A{int32(0), int32(4), int32(9)}, get(apply(doc("$push", doc("a", doc("$each", bson.A{int32(9), int32(0)}, "$sort", 1)))), "a"))
	assert.Equal(t, bson.A{int32(4), int32(9)}, get(apply(doc("$push", doc("a", doc("$each", bson.A{}, "$slice", -2)))), "a"))
	d := apply(doc("$rename", doc("old", "renamed")))
	assert.Nil(t, get(d, "old"))
	assert.Equal(t, "v", get(d, "renamed"))
	assert.Equal(t, doc("x", int32(1), "y", int32(2)), get(apply(doc("$set", doc("s.y", int32(2)))), "s"))

	// Upsert seeds the new document with the query's equalities, dotted
	// paths as embedded documents.
	res, err := coll.UpdateOne(ctx, doc("_id", 2, "p.q", "r", "n", doc("$gt", 1)), doc("$set", doc("z", 1)), options.UpdateOne().SetUpsert(true))
	require.NoError(t, err)
	assert.EqualValues(t, 1, res.UpsertedCount)
	var up bson.D
	require.NoError(t, coll.FindOne(ctx, doc("_id", 2)).Decode(&up))
	assert.Equal(t, doc("_id", int32(2), "p", doc("q", "r"), "z", int32(1)), up)

	for _, bad := range []struct {
		update any
		code   int
	}{
		{doc("$set", doc("a.$", 1)), 2},
		{doc("$set", doc("a.$[e]", 1)), 2},
		{doc("$bit", doc("n", doc("and", 1))), 9},
		{doc("$set", doc("s", 1), "$unset", doc("s.x", "")), 40},
		{doc("$inc", doc("renamed", 1)), 14},
		{doc("$push", doc("s", 1)), 2},
	} {
		_, err := coll.UpdateOne(ctx, doc("_id", 1), bad.update)
		var we mongo.WriteException
		if assert.ErrorAs(t, err, &we, "update %v", bad.update) && assert.Len(t, we.WriteErrors, 1) {
			assert.Equal(t, bad.code, we.WriteErrors[0].Code, "update %v: %v", bad.update, err)
		}
	}
	_, err = coll.UpdateOne(ctx, doc("_id", 1), doc("$set", doc("a.$[e]", 1)), options.UpdateOne().SetArrayFilters([]any{doc("e", 1)}))
	assert.Error(t, err, "arrayFilters")
}

func TestAggregateFidelity(t *testing.T) {
	_, ctx, _, coll := setup(t)
	_, err := coll.InsertMany(ctx, []any{
		doc("_id", 1, "g", "a", "k", "x", "v", int32(1)),
		doc("_id", 2, "g", "a", "k", "y", "v", int32(3)),
		doc("_id", 3, "g", "b", "k", "x", "v", 2.5),
		doc("_id", 4, "g", "b", "k", "x"),
	})
	require.NoError(t, err)
	agg := func(p mongo.Pipeline) []bson.D {
		t.Helper()
		cur, err := coll.Aggregate(ctx, p)
		require.NoError(t, err, "pipeline %v", p)
		var out []bson.D
		require.NoError(t, cur.All(ctx, &out))
		return out
	}
	got := agg(mongo.Pipeline{
		{{Key: "$group", Value: doc("_id", doc("g", "$g", "k", "$k"), "total", doc("$sum", "$v"), "n", doc("$sum", 1),
			"avg", doc("$avg", "$v"), "max", doc("$max", "$v"), "vs", doc("$push", "$v"))}},
		{{Key: "$sort", Value: doc("_id.g", 1, "_id.k", 1)}},
	})
	assert.Equal(t, []bson.D{
		doc("_id", doc("g", "a", "k", "x"), "total", int32(1), "n", int32(1), "avg", 1.0, "max", int32(1), "vs", bson.A{int32(1)}),
		doc("_id", doc("g", "a", "k", "y"), "total", int32(3), "n", int32(1), "avg", 3.0, "max", int32(3), "vs", bson.A{int32(3)}),
		doc("_id", doc("g", "b", "k", "x"), "total", 2.5, "n", int32(2), "avg", 2.5, "max", 2.5, "vs", bson.A{2.5}),
	}, got)

	got = agg(mongo.Pipeline{
		{{Key: "$match", Value: doc("v", doc("$exists", true))}},
		{{Key: "$project", Value: doc("_id", 0, "g", 1, "double", doc("$multiply", bson.A{"$v", 2}))}},
		{{Key: "$sort", Value: doc("double", -1)}},
		{{Key: "$limit", Value: 2}},
	})
	assert.Equal(t, []bson.D{doc("g", "a", "double", int32(6)), doc("g", "b", "double", 5.0)}, got)

	got = agg(mongo.Pipeline{{{Key: "$sortByCount", Value: "$k"}}})
	assert.Equal(t, []bson.D{doc("_id", "x", "count", int32(3)), doc("_id", "y", "count", int32(1))}, got)

	for _, bad := range []struct {
		stage bson.D
		code  int
	}{
		{doc("$foo", doc()), 40324},
		{doc("$lookup", doc("from", "x")), 9},
		{doc("$group", doc("_id", nil, "x", doc("$stdDevPop", "$v"))), 15952},
		{doc("$project", doc("x", doc("$dateToString", doc("date", "$d")))), 168},
		{doc("$project", doc("a", 1, "b", 0)), 31254},
	} {
		_, err := coll.Aggregate(ctx, mongo.Pipeline{bad.stage})
		se := serverError(t, err)
		assert.True(t, se.HasErrorCode(bad.code), "stage %v: %v", bad.stage, err)
	}

	var vals []string
	require.NoError(t, coll.Distinct(ctx, "k", doc("g", "b")).Decode(&vals))
	assert.Equal(t, []string{"x"}, vals)
}

func TestCollationRejected(t *testing.T) {
	_, ctx, _, coll := setup(t)
	mustInsert(t, ctx, coll, doc("_id", 1, "s", "A"))
	_, err := coll.Find(ctx, doc("s", "a"), options.Find().SetCollation(&options.Collation{Locale: "en", Strength: 2}))
	assert.True(t, serverError(t, err).HasErrorCode(2), "find with a collation: %v", err)
	_, err = coll.UpdateOne(ctx, doc("s", "a"), doc("$set", doc("t", 1)), options.UpdateOne().SetCollation(&options.Collation{Locale: "en", Strength: 2}))
	assert.Error(t, err, "update with a collation")
	_, err = coll.Find(ctx, doc("s", "A"), options.Find().SetCollation(&options.Collation{Locale: "simple"}))
	assert.NoError(t, err, "the simple collation")
}

// TestCommandNotAllowedInTransactionLeavesItOpen: count (the driver's
// EstimatedDocumentCount) fails with OperationNotSupportedInTransaction
// without aborting the transaction, which commits; as the first statement
// it starts no transaction.
func TestCommandNotAllowedInTransactionLeavesItOpen(t *testing.T) {
	srv, ctx, client, coll := setup(t)
	sess, sctx := insertInTxn(t, ctx, client, coll)
	_, err := coll.EstimatedDocumentCount(sctx)
	se := serverError(t, err)
	require.True(t, se.HasErrorCode(263), "count in a transaction: %v", err)
	mustInsert(t, sctx, coll, doc("_id", 2))
	require.NoError(t, sess.CommitTransaction(ctx))
	assert.Len(t, srv.Docs(dbName, "c"), 2)

	sess2, sctx2 := startTxn(t, ctx, client)
	_, err = coll.EstimatedDocumentCount(sctx2)
	require.True(t, serverError(t, err).HasErrorCode(263))
	_, err = coll.InsertOne(sctx2, doc("_id", 3))
	require.True(t, serverError(t, err).HasErrorCode(251), "no transaction was started: %v", err)
	_ = sess2.AbortTransaction(ctx)
}

// TestCollectionCreatedInTransaction: a collection a transaction creates
// exists for it alone until it commits. Another transaction that writes it
// gets a transient WriteConflict; a write outside any waits for the
// commit; the abort of the creator removes it.
func TestCollectionCreatedInTransaction(t *testing.T) {
	srv, ctx, client, _ := setup(t)
	db := client.Database(dbName)
	fresh := db.Collection("fresh")
	sess, sctx := startTxn(t, ctx, client)
	mustInsert(t, sctx, fresh, doc("_id", 1))
	names, err := db.ListCollectionNames(ctx, doc())
	require.NoError(t, err)
	assert.NotContains(t, names, "fresh", "visible before the commit")

	_, sctx2 := startTxn(t, ctx, client)
	_, err = fresh.InsertOne(sctx2, doc("_id", 2))
	se := serverError(t, err)
	assert.True(t, se.HasErrorCode(112) && se.HasErrorLabel("TransientTransactionError"), "second creator: %v", err)

	outside := make(chan error, 1)
	go func() {
		_, err := fresh.InsertOne(ctx, doc("_id", 3))
		outside <- err
	}()
	require.Eventually(t, func() bool {
		return slices.ContainsFunc(srv.Commands(), func(c mongotest.Command) bool {
			return c.Name == "insert" && c.Collection == "fresh" && !c.InTransaction
		})
	}, 5*time.Second, 5*time.Millisecond, "outside insert never arrived")
	select {
	case err := <-outside:
		t.Fatalf("the write outside the transaction did not wait: %v", err)
	default:
	}
	require.NoError(t, sess.CommitTransaction(ctx))
	require.NoError(t, <-outside)
	assert.Len(t, srv.Docs(dbName, "fresh"), 2)

	sess3, sctx3 := startTxn(t, ctx, client)
	mustInsert(t, sctx3, db.Collection("gone"), doc("_id", 1))
	require.NoError(t, sess3.AbortTransaction(ctx))
	names, err = db.ListCollectionNames(ctx, doc())
	require.NoError(t, err)
	slices.Sort(names)
	assert.Equal(t, []string{"fresh"}, names)
}

// TestUniqueIndex: createIndexes with unique makes duplicate keys fail with
// DuplicateKey (11000) naming the index, on insert, update and upsert, and
// on creation over existing duplicates; a missing field is a null key
// unless the index is sparse; listIndexes and dropIndexes see it.
func TestUniqueIndex(t *testing.T) {
	_, ctx, _, coll := setup(t)
	name, err := coll.Indexes().CreateOne(ctx, mongo.IndexModel{Keys: doc("email", 1), Options: options.Index().SetUnique(true)})
	require.NoError(t, err)
	assert.Equal(t, "email_1", name)
	mustInsert(t, ctx, coll, doc("_id", 1, "email", "a@x"))
	mustInsert(t, ctx, coll, doc("_id", 2, "email", "b@x"))

	_, err = coll.InsertOne(ctx, doc("_id", 3, "email", "a@x"))
	require.True(t, mongo.IsDuplicateKeyError(err), "insert: %v", err)
	var we mongo.WriteException
	require.ErrorAs(t, err, &we)
	assert.Contains(t, we.WriteErrors[0].Message, `index: email_1 dup key: { email: "a@x" }`)
	assert.Equal(t, "a@x", we.WriteErrors[0].Raw.Lookup("keyValue", "email").StringValue())

	_, err = coll.UpdateOne(ctx, doc("_id", 2), doc("$set", doc("email", "a@x")))
	assert.True(t, mongo.IsDuplicateKeyError(err), "update: %v", err)
	_, err = coll.UpdateOne(ctx, doc("_id", 9), doc("$set", doc("email", "b@x")), options.UpdateOne().SetUpsert(true))
	assert.True(t, mongo.IsDuplicateKeyError(err), "upsert: %v", err)
	_, err = coll.UpdateMany(ctx, doc(), doc("$set", doc("email", "same")))
	assert.True(t, mongo.IsDuplicateKeyError(err), "update of two documents to one key: %v", err)
	_, err = coll.UpdateOne(ctx, doc("_id", 1), doc("$set", doc("other", 1)))
	assert.NoError(t, err, "a document keeps its own key")

	mustInsert(t, ctx, coll, doc("_id", 4))
	_, err = coll.InsertOne(ctx, doc("_id", 5))
	assert.True(t, mongo.IsDuplicateKeyError(err), "two missing keys index as null: %v", err)

	_, err = coll.Indexes().CreateOne(ctx, mongo.IndexModel{Keys: doc("n", 1), Options: options.Index().SetUnique(true).SetSparse(true)})
	require.NoError(t, err)
	mustInsert(t, ctx, coll, doc("_id", 6, "email", "c@x"))
	_, err = coll.Indexes().CreateOne(ctx, mongo.IndexModel{Keys: doc("k", 1), Options: options.Index().SetUnique(true)})
	assert.True(t, mongo.IsDuplicateKeyError(err), "unique index over duplicates: %v", err)

	cur, err := coll.Indexes().List(ctx)
	require.NoError(t, err)
	var specs []bson.M
	require.NoError(t, cur.All(ctx, &specs))
	var names []string
	for _, s := range specs {
		names = append(names, s["name"].(string))
	}
	assert.Equal(t, []string{"_id_", "email_1", "n_1"}, names)
	require.NoError(t, coll.Indexes().DropOne(ctx, "email_1"))
	mustInsert(t, ctx, coll, doc("_id", 7, "email", "a@x"))
}

// TestUniqueIndexConcurrentTransactions: a key another open transaction
// wrote is a WriteConflict for a transaction (it may retry) and makes a
// write outside transactions wait; once the first commits, the key is a
// DuplicateKey.
func TestUniqueIndexConcurrentTransactions(t *testing.T) {
	srv, ctx, client, coll := setup(t)
	_, err := coll.Indexes().CreateOne(ctx, mongo.IndexModel{Keys: doc("email", 1), Options: options.Index().SetUnique(true)})
	require.NoError(t, err)
	sess, sctx := startTxn(t, ctx, client)
	mustInsert(t, sctx, coll, doc("_id", 1, "email", "a@x"))

	_, sctx2 := startTxn(t, ctx, client)
	_, err = coll.InsertOne(sctx2, doc("_id", 2, "email", "a@x"))
	se := serverError(t, err)
	assert.True(t, se.HasErrorCode(112) && se.HasErrorLabel("TransientTransactionError"), "second transaction: %v", err)

	outside := make(chan error, 1)
	go func() {
		_, err := coll.InsertOne(ctx, doc("_id", 3, "email", "a@x"))
		outside <- err
	}()
	require.Eventually(t, func() bool {
		return slices.ContainsFunc(srv.Commands(), func(c mongotest.Command) bool {
			return c.Name == "insert" && !c.InTransaction
		})
	}, 5*time.Second, 5*time.Millisecond, "outside insert never arrived")
	select {
	case err := <-outside:
		t.Fatalf("the write outside the transaction did not wait: %v", err)
	default:
	}
	require.NoError(t, sess.CommitTransaction(ctx))
	err = <-outside
	assert.True(t, mongo.IsDuplicateKeyError(err), "after the commit: %v", err)
	assert.Len(t, srv.Docs(dbName, "c"), 1)
}

// TestUpdateArrayElements: $set, $inc and $unset on array elements by
// index: a set past the end pads with nulls, an unset leaves a null.
func TestUpdateArrayElements(t *testing.T) {
	_, ctx, _, coll := setup(t)
	mustInsert(t, ctx, coll, doc("_id", 1, "a", bson.A{int32(1), doc("q", int32(1))}))
	for _, u := range []any{
		doc("$set", doc("a.3", "x")),
		doc("$inc", doc("a.1.q", int32(2))),
		doc("$unset", doc("a.0", "")),
	} {
		_, err := coll.UpdateOne(ctx, doc("_id", 1), u)
		require.NoError(t, err, "update %v", u)
	}
	var got bson.D
	require.NoError(t, coll.FindOne(ctx, doc("_id", 1)).Decode(&got))
	assert.Equal(t, doc("_id", int32(1), "a", bson.A{nil, doc("q", int32(3)), nil, "x"}), got)
}

// TestPositionalUpdates: $ updates the first array element the query
// matched, $[] every element; $ without a matching array condition fails
// as in mongod.
func TestPositionalUpdates(t *testing.T) {
	_, ctx, _, coll := setup(t)
	mustInsert(t, ctx, coll, doc("_id", 1, "items", bson.A{doc("sku", "a", "qty", int32(1)), doc("sku", "b", "qty", int32(2))}, "tags", bson.A{"x", "y"}))
	_, err := coll.UpdateOne(ctx, doc("_id", 1, "items.sku", "b"), doc("$inc", doc("items.$.qty", int32(10))))
	require.NoError(t, err)
	_, err = coll.UpdateOne(ctx, doc("_id", 1, "tags", "y"), doc("$set", doc("tags.$", "Y")))
	require.NoError(t, err)
	_, err = coll.UpdateOne(ctx, doc("_id", 1), doc("$set", doc("items.$[].seen", true)))
	require.NoError(t, err)
	var got bson.D
	require.NoError(t, coll.FindOne(ctx, doc("_id", 1)).Decode(&got))
	assert.Equal(t, doc("_id", int32(1),
		"items", bson.A{doc("sku", "a", "qty", int32(1), "seen", true), doc("sku", "b", "qty", int32(12), "seen", true)},
		"tags", bson.A{"x", "Y"}), got)

	_, err = coll.UpdateOne(ctx, doc("_id", 1), doc("$set", doc("items.$.qty", 0)))
	var we mongo.WriteException
	if assert.ErrorAs(t, err, &we) && assert.Len(t, we.WriteErrors, 1) {
		assert.Equal(t, 2, we.WriteErrors[0].Code)
		assert.Contains(t, we.WriteErrors[0].Message, "positional operator did not find the match")
	}
}

// TestInvalidID: an array _id fails with InvalidIdField (53), as on mongod
// 7.0.
func TestInvalidID(t *testing.T) {
	_, ctx, _, coll := setup(t)
	_, err := coll.InsertOne(ctx, doc("_id", bson.A{1, 2}))
	var we mongo.WriteException
	if assert.ErrorAs(t, err, &we) && assert.Len(t, we.WriteErrors, 1) {
		assert.Equal(t, 53, we.WriteErrors[0].Code, "%v", err)
	}
}

// TestCreateCollection: creating a collection that exists succeeds (7.0),
// a dropped one can be created again, and options mongotest would ignore
// (a validator) fail.
func TestCreateCollection(t *testing.T) {
	_, ctx, client, _ := setup(t)
	db := client.Database(dbName)
	require.NoError(t, db.CreateCollection(ctx, "x"))
	require.NoError(t, db.CreateCollection(ctx, "x"), "create of an existing collection")
	require.NoError(t, db.Collection("x").Drop(ctx))
	names, err := db.ListCollectionNames(ctx, doc())
	require.NoError(t, err)
	assert.Empty(t, names, "after drop")
	require.NoError(t, db.CreateCollection(ctx, "x"), "create after drop")
	names, err = db.ListCollectionNames(ctx, doc())
	require.NoError(t, err)
	assert.Equal(t, []string{"x"}, names)
	err = db.CreateCollection(ctx, "v", options.CreateCollection().SetValidator(doc("a", doc("$exists", true))))
	assert.Error(t, err, "a validator")
}

// TestOptionsThatWouldChangeTheAnswerFail: options mongotest does not
// honour fail rather than being ignored.
func TestOptionsThatWouldChangeTheAnswerFail(t *testing.T) {
	_, ctx, _, coll := setup(t)
	mustInsert(t, ctx, coll, doc("_id", 1, "a", bson.A{int32(1)}))
	err := coll.FindOneAndUpdate(ctx, doc("_id", 1), doc("$set", doc("a.$[e]", 2)),
		options.FindOneAndUpdate().SetArrayFilters([]any{doc("e", 1)})).Err()
	assert.Error(t, err, "findAndModify with arrayFilters")
	_, err = coll.Find(ctx, doc(), options.Find().SetShowRecordID(true))
	assert.Error(t, err, "find with showRecordId")
	_, err = coll.Find(ctx, doc(), options.Find().SetReturnKey(true))
	assert.Error(t, err, "find with returnKey")
}

// TestUpsertReplacementKeepsQueryID: an upserted replacement takes the
// query's _id, and may not contradict it (ImmutableField, 66).
func TestUpsertReplacementKeepsQueryID(t *testing.T) {
	_, ctx, _, coll := setup(t)
	res, err := coll.ReplaceOne(ctx, doc("_id", 1, "k", "q"), doc("v", 1), options.Replace().SetUpsert(true))
	require.NoError(t, err)
	assert.Equal(t, int32(1), res.UpsertedID)
	var got bson.D
	require.NoError(t, coll.FindOne(ctx, doc("_id", 1)).Decode(&got))
	assert.Equal(t, doc("_id", int32(1), "v", int32(1)), got)
	_, err = coll.ReplaceOne(ctx, doc("_id", 2), doc("_id", 3, "v", 1), options.Replace().SetUpsert(true))
	var we mongo.WriteException
	if assert.ErrorAs(t, err, &we) && assert.Len(t, we.WriteErrors, 1) {
		assert.Equal(t, 66, we.WriteErrors[0].Code)
	}
}

// TestDecimalArithmetic: $inc and $mul on a Decimal128 keep it a
// Decimal128, computed exactly, as mongod does (money kept in decimals).
func TestDecimalArithmetic(t *testing.T) {
	_, ctx, _, coll := setup(t)
	dec := func(s string) bson.Decimal128 {
		d, err := bson.ParseDecimal128(s)
		require.NoError(t, err)
		return d
	}
	mustInsert(t, ctx, coll, doc("_id", 1, "bal", dec("10.50")))
	for _, u := range []any{
		doc("$inc", doc("bal", dec("0.25"))),
		doc("$inc", doc("bal", int32(1))),
		doc("$mul", doc("bal", int32(2))),
		doc("$inc", doc("bal", dec("-0.10"))),
	} {
		_, err := coll.UpdateOne(ctx, doc("_id", 1), u)
		require.NoError(t, err, "update %v", u)
	}
	var got struct{ Bal bson.Decimal128 }
	require.NoError(t, coll.FindOne(ctx, doc("_id", 1)).Decode(&got))
	assert.Equal(t, "23.40", got.Bal.String())
	n, err := coll.CountDocuments(ctx, doc("bal", doc("$gt", dec("23.39"), "$lt", 23.41)))
	require.NoError(t, err)
	assert.EqualValues(t, 1, n, "comparisons with decimals")

	mustInsert(t, ctx, coll, doc("_id", 2, "bal", dec("0.60")))
	cur, err := coll.Aggregate(ctx, mongo.Pipeline{{{Key: "$group", Value: doc("_id", nil, "sum", doc("$sum", "$bal"), "avg", doc("$avg", "$bal"))}}})
	require.NoError(t, err)
	var agg []struct{ Sum, Avg bson.Decimal128 }
	require.NoError(t, cur.All(ctx, &agg))
	require.Len(t, agg, 1)
	assert.Equal(t, "24.00", agg[0].Sum.String())
	assert.Equal(t, "12.00", agg[0].Avg.String())
}

// TestNaturalOrder: a {$natural: -1} sort or hint returns documents in
// reverse insertion order.
func TestNaturalOrder(t *testing.T) {
	_, ctx, _, coll := setup(t)
	for _, id := range []int32{3, 1, 2} {
		mustInsert(t, ctx, coll, doc("_id", id))
	}
	assert.Equal(t, []any{int32(3), int32(1), int32(2)}, ids(t, ctx, coll, doc()))
	assert.Equal(t, []any{int32(2), int32(1), int32(3)}, ids(t, ctx, coll, doc(), options.Find().SetSort(doc("$natural", -1))))
	assert.Equal(t, []any{int32(2), int32(1), int32(3)}, ids(t, ctx, coll, doc(), options.Find().SetHint(doc("$natural", -1))))
}
