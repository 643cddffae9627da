package txnmongo_test

// Tests that use the driver inside Runs the way application code does and
// check every result against what mongod (4.4 and later, 7.0 for the
// details noted) documents: CRUD result fields, transaction semantics and
// the shape of errors. They run against mongotest and, with
// TXN_MONGODB_URI, against a real replica set, so a divergence of the test
// server from mongod shows up as a failure of the mongotest subtest only.

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/txnkit/txn"
	"github.com/txnkit/txn/backends/txnmongo"
)

// counts are the fields of an UpdateResult.
type counts struct {
	Matched, Modified, Upserted int64
	UpsertedID                  any
}

func countsOf(r *mongo.UpdateResult) counts {
	return counts{r.MatchedCount, r.ModifiedCount, r.UpsertedCount, r.UpsertedID}
}

// runOnce runs fn in a Run that must succeed with exactly one attempt (the
// test has no contention).
func runOnce(t *testing.T, e *env, fn func(ctx context.Context) error) {
	t.Helper()
	r := txnmongo.New(e.client)
	calls := 0
	err := r.Run(e.ctx(t), func(ctx context.Context, _ *mongo.Session) error {
		calls++
		return fn(ctx)
	})
	require.NoError(t, err)
	require.Equal(t, 1, calls, "fn attempts")
}

// findD returns the committed documents of coll matching filter, sorted by
// _id, with their fields in stored order.
func (e *env) findD(t *testing.T, coll string, filter any) []bson.D {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cur, err := e.admin.Database(e.db).Collection(coll).Find(ctx, filter, options.Find().SetSort(bson.D{{Key: "_id", Value: 1}}))
	require.NoError(t, err, "find in %s", coll)
	var out []bson.D
	require.NoError(t, cur.All(ctx, &out), "find in %s", coll)
	return out
}

// d builds an ordered document from alternating keys and values.
func d(kv ...any) bson.D {
	out := make(bson.D, 0, len(kv)/2)
	for i := 0; i+1 < len(kv); i += 2 {
		out = append(out, bson.E{Key: kv[i].(string), Value: kv[i+1]})
	}
	return out
}

// TestFidelityUpdateResults: the result fields of updates and upserts in a
// transaction, and the documents they leave, as mongod reports them: a $set
// to the value already there matches and modifies nothing; an upsert
// matches 0 and reports its _id; $setOnInsert acts only on insert; new
// fields are added in lexicographic order (update operators process fields
// in that order since 5.0).
func TestFidelityUpdateResults(t *testing.T) {
	eachServer(t, func(t *testing.T, e *env) {
		e.insert(t, "c",
			d("_id", int32(1), "n", int32(1), "tags", bson.A{}),
			d("_id", int32(2), "n", int32(2)),
			d("_id", int32(3), "n", int32(3)))
		coll := e.coll("c")
		runOnce(t, e, func(ctx context.Context) error {
			steps := []struct {
				name   string
				filter any
				update any
				upsert bool
				many   bool
				want   counts
			}{
				{"$set same value", bson.M{"_id": 1}, bson.M{"$set": bson.M{"n": int32(1)}}, false, false, counts{1, 0, 0, nil}},
				{"$inc and $push", bson.M{"_id": 1}, bson.M{"$inc": bson.M{"n": int32(5)}, "$push": bson.M{"tags": "a"}}, false, false, counts{1, 1, 0, nil}},
				{"$unset missing field", bson.M{"_id": 1}, bson.M{"$unset": bson.M{"nothere": ""}}, false, false, counts{1, 0, 0, nil}},
				{"$setOnInsert on match", bson.M{"_id": 1}, bson.M{"$setOnInsert": bson.M{"x": 1}}, true, false, counts{1, 0, 0, nil}},
				{"no match", bson.M{"_id": 99}, bson.M{"$set": bson.M{"n": 1}}, false, false, counts{0, 0, 0, nil}},
				{"UpdateMany", bson.M{"n": bson.M{"$gte": 2}}, bson.M{"$inc": bson.M{"n": int32(10)}}, false, true, counts{3, 3, 0, nil}},
				{"UpdateMany partly unchanged", bson.M{}, bson.M{"$set": bson.M{"n": int32(12)}}, false, true, counts{3, 2, 0, nil}},
				{"upsert", bson.M{"_id": int32(9), "k": "v"}, d("$set", d("z", int32(1), "a", int32(2)), "$setOnInsert", d("created", true)), true, false, counts{0, 0, 1, int32(9)}},
				{"upsert again matches", bson.M{"_id": int32(9), "k": "v"}, d("$set", d("z", int32(1), "a", int32(2)), "$setOnInsert", d("created", false)), true, false, counts{1, 0, 0, nil}},
				{"new fields in lexicographic order", bson.M{"_id": 2}, d("$set", d("zz", int32(1)), "$inc", d("aa", int32(1))), false, false, counts{1, 1, 0, nil}},
			}
			for _, s := range steps {
				opts := options.UpdateOne().SetUpsert(s.upsert)
				var res *mongo.UpdateResult
				var err error
				if s.many {
					res, err = coll.UpdateMany(ctx, s.filter, s.update, options.UpdateMany().SetUpsert(s.upsert))
				} else {
					res, err = coll.UpdateOne(ctx, s.filter, s.update, opts)
				}
				if err != nil {
					return err
				}
				assert.Equal(t, s.want, countsOf(res), s.name)
			}
			// Read your own writes.
			var got bson.D
			if err := coll.FindOne(ctx, bson.M{"_id": 9}).Decode(&got); err != nil {
				return err
			}
			assert.Equal(t, d("_id", int32(9), "k", "v", "a", int32(2), "created", true, "z", int32(1)), got, "upserted document inside the transaction")
			return nil
		})
		assert.Equal(t, []bson.D{
			d("_id", int32(1), "n", int32(12), "tags", bson.A{"a"}),
			d("_id", int32(2), "n", int32(12), "aa", int32(1), "zz", int32(1)),
			d("_id", int32(3), "n", int32(12)),
			d("_id", int32(9), "k", "v", "a", int32(2), "created", true, "z", int32(1)),
		}, e.findD(t, "c", bson.M{}))
	})
}

// TestFidelityReplaceAndFindOneAnd: ReplaceOne and the FindOneAnd* helpers
// in a transaction, with the documents mongod returns for ReturnDocument
// Before and After, with and without upsert.
func TestFidelityReplaceAndFindOneAnd(t *testing.T) {
	eachServer(t, func(t *testing.T, e *env) {
		e.insert(t, "c",
			d("_id", int32(1), "n", int32(1)),
			d("_id", int32(2), "n", int32(2)),
			d("_id", int32(3), "n", int32(3)))
		coll := e.coll("c")
		runOnce(t, e, func(ctx context.Context) error {
			res, err := coll.ReplaceOne(ctx, bson.M{"_id": 1}, d("m", "x"))
			if err != nil {
				return err
			}
			assert.Equal(t, counts{1, 1, 0, nil}, countsOf(res), "ReplaceOne")
			res, err = coll.ReplaceOne(ctx, bson.M{"_id": 1}, d("m", "x"))
			if err != nil {
				return err
			}
			assert.Equal(t, counts{1, 0, 0, nil}, countsOf(res), "ReplaceOne with the same document")
			res, err = coll.ReplaceOne(ctx, bson.M{"_id": int32(10)}, d("m", "y"), options.Replace().SetUpsert(true))
			if err != nil {
				return err
			}
			assert.Equal(t, counts{0, 0, 1, int32(10)}, countsOf(res), "ReplaceOne upsert")

			var before, after bson.D
			err = coll.FindOneAndUpdate(ctx, bson.M{"_id": 2}, bson.M{"$inc": bson.M{"n": int32(1)}}).Decode(&before)
			if err != nil {
				return err
			}
			assert.Equal(t, d("_id", int32(2), "n", int32(2)), before, "FindOneAndUpdate returns the document before by default")
			err = coll.FindOneAndUpdate(ctx, bson.M{"_id": 2}, bson.M{"$inc": bson.M{"n": int32(1)}},
				options.FindOneAndUpdate().SetReturnDocument(options.After)).Decode(&after)
			if err != nil {
				return err
			}
			assert.Equal(t, d("_id", int32(2), "n", int32(4)), after, "ReturnDocument After")

			err = coll.FindOneAndUpdate(ctx, bson.M{"_id": int32(20)}, bson.M{"$set": bson.M{"n": int32(1)}},
				options.FindOneAndUpdate().SetUpsert(true)).Err()
			assert.ErrorIs(t, err, mongo.ErrNoDocuments, "upsert with ReturnDocument Before returns no document")
			after = nil
			err = coll.FindOneAndUpdate(ctx, bson.M{"_id": int32(21)}, bson.M{"$set": bson.M{"n": int32(1)}},
				options.FindOneAndUpdate().SetUpsert(true).SetReturnDocument(options.After)).Decode(&after)
			if err != nil {
				return err
			}
			assert.Equal(t, d("_id", int32(21), "n", int32(1)), after, "upsert with ReturnDocument After")

			err = coll.FindOneAndUpdate(ctx, bson.M{"_id": int32(99)}, bson.M{"$set": bson.M{"n": int32(1)}}).Err()
			assert.ErrorIs(t, err, mongo.ErrNoDocuments, "no match, no upsert")

			var replaced bson.D
			err = coll.FindOneAndReplace(ctx, bson.M{"_id": 3}, d("r", true),
				options.FindOneAndReplace().SetReturnDocument(options.After).SetProjection(bson.M{"_id": 0})).Decode(&replaced)
			if err != nil {
				return err
			}
			assert.Equal(t, d("r", true), replaced, "FindOneAndReplace After with projection")

			var deleted bson.D
			err = coll.FindOneAndDelete(ctx, bson.M{"n": bson.M{"$gte": 1}}, options.FindOneAndDelete().SetSort(bson.M{"n": -1})).Decode(&deleted)
			if err != nil {
				return err
			}
			assert.Equal(t, d("_id", int32(2), "n", int32(4)), deleted, "FindOneAndDelete takes the first in sort order")
			return nil
		})
		assert.Equal(t, []bson.D{
			d("_id", int32(1), "m", "x"),
			d("_id", int32(3), "r", true),
			d("_id", int32(10), "m", "y"),
			d("_id", int32(20), "n", int32(1)),
			d("_id", int32(21), "n", int32(1)),
		}, e.findD(t, "c", bson.M{}))
	})
}

// TestFidelityInsertDeleteAndReads: InsertMany, DeleteOne/DeleteMany,
// CountDocuments, Distinct and Find with sort, skip, limit and projection
// in one transaction; EstimatedDocumentCount is refused in a transaction
// (the count command: OperationNotSupportedInTransaction, 263).
func TestFidelityInsertDeleteAndReads(t *testing.T) {
	eachServer(t, func(t *testing.T, e *env) {
		coll := e.coll("c")
		runOnce(t, e, func(ctx context.Context) error {
			docs := []any{
				d("_id", int32(1), "g", "a", "n", int32(5), "sub", d("x", int32(1), "y", int32(2)), "tags", bson.A{"p", "q"}),
				d("_id", int32(2), "g", "b", "n", int32(3), "tags", bson.A{"q"}),
				d("_id", int32(3), "g", "a", "n", int32(1), "tags", bson.A{}),
				d("_id", int32(4), "g", "a", "n", int32(4)),
				d("_id", int32(5), "g", "c", "n", int32(2), "tags", "r"),
			}
			ins, err := coll.InsertMany(ctx, docs)
			if err != nil {
				return err
			}
			assert.Equal(t, []any{int32(1), int32(2), int32(3), int32(4), int32(5)}, ins.InsertedIDs)

			n, err := coll.CountDocuments(ctx, bson.M{"g": "a"})
			if err != nil {
				return err
			}
			assert.EqualValues(t, 3, n, "CountDocuments")
			n, err = coll.CountDocuments(ctx, bson.M{}, options.Count().SetSkip(1).SetLimit(3))
			if err != nil {
				return err
			}
			assert.EqualValues(t, 3, n, "CountDocuments with skip and limit")

			var gs []string
			if err := coll.Distinct(ctx, "g", bson.M{}).Decode(&gs); err != nil {
				return err
			}
			slices.Sort(gs)
			assert.Equal(t, []string{"a", "b", "c"}, gs, "Distinct")
			var tags []string
			if err := coll.Distinct(ctx, "tags", bson.M{"n": bson.M{"$gt": 1}}).Decode(&tags); err != nil {
				return err
			}
			slices.Sort(tags)
			assert.Equal(t, []string{"p", "q", "r"}, tags, "Distinct flattens arrays")

			cur, err := coll.Find(ctx, bson.M{"g": "a"}, options.Find().
				SetSort(bson.D{{Key: "n", Value: -1}}).SetSkip(1).SetLimit(2).
				SetProjection(bson.D{{Key: "n", Value: 1}, {Key: "_id", Value: 0}}))
			if err != nil {
				return err
			}
			var got []bson.D
			if err := cur.All(ctx, &got); err != nil {
				return err
			}
			assert.Equal(t, []bson.D{d("n", int32(4)), d("n", int32(1))}, got, "Find with sort, skip, limit, projection")

			var sub bson.D
			err = coll.FindOne(ctx, bson.M{"_id": 1}, options.FindOne().SetProjection(bson.M{"sub.y": 1})).Decode(&sub)
			if err != nil {
				return err
			}
			assert.Equal(t, d("_id", int32(1), "sub", d("y", int32(2))), sub, "projection of an embedded field")
			sub = nil
			err = coll.FindOne(ctx, bson.M{"_id": 1}, options.FindOne().SetProjection(bson.M{"sub.x": 0, "tags": 0, "g": 0})).Decode(&sub)
			if err != nil {
				return err
			}
			assert.Equal(t, d("_id", int32(1), "n", int32(5), "sub", d("y", int32(2))), sub, "exclusion of an embedded field")

			dr, err := coll.DeleteOne(ctx, bson.M{"g": "a"})
			if err != nil {
				return err
			}
			assert.EqualValues(t, 1, dr.DeletedCount, "DeleteOne")
			dr, err = coll.DeleteMany(ctx, bson.M{"g": "a"})
			if err != nil {
				return err
			}
			assert.EqualValues(t, 2, dr.DeletedCount, "DeleteMany")
			dr, err = coll.DeleteMany(ctx, bson.M{"g": "zzz"})
			if err != nil {
				return err
			}
			assert.EqualValues(t, 0, dr.DeletedCount, "DeleteMany without match")

			_, err = coll.EstimatedDocumentCount(ctx)
			var ce mongo.CommandError
			if assert.ErrorAs(t, err, &ce, "EstimatedDocumentCount in a transaction") {
				assert.EqualValues(t, 263, ce.Code)
				assert.Equal(t, "OperationNotSupportedInTransaction", ce.Name)
				assert.False(t, ce.HasErrorLabel("TransientTransactionError"))
			}
			return nil
		})
		ids := []any{}
		for _, doc := range e.find(t, "c", bson.M{}) {
			ids = append(ids, doc["_id"])
		}
		assert.Equal(t, []any{int32(2), int32(5)}, ids)
	})
}

// TestFidelityBulkWrite: a mixed ordered BulkWrite in a transaction and its
// result fields; UpsertedIDs are keyed by the model's index.
func TestFidelityBulkWrite(t *testing.T) {
	eachServer(t, func(t *testing.T, e *env) {
		e.insert(t, "c", d("_id", int32(1), "n", int32(1)), d("_id", int32(2), "n", int32(2)))
		coll := e.coll("c")
		runOnce(t, e, func(ctx context.Context) error {
			res, err := coll.BulkWrite(ctx, []mongo.WriteModel{
				mongo.NewInsertOneModel().SetDocument(d("_id", int32(3), "n", int32(3))),
				mongo.NewUpdateOneModel().SetFilter(bson.M{"_id": 1}).SetUpdate(bson.M{"$inc": bson.M{"n": int32(10)}}),
				mongo.NewUpdateManyModel().SetFilter(bson.M{}).SetUpdate(bson.M{"$set": bson.M{"k": true}}),
				mongo.NewUpdateOneModel().SetFilter(bson.M{"_id": int32(7)}).SetUpdate(bson.M{"$set": bson.M{"n": int32(7)}}).SetUpsert(true),
				mongo.NewReplaceOneModel().SetFilter(bson.M{"_id": 2}).SetReplacement(d("r", int32(1))),
				mongo.NewDeleteOneModel().SetFilter(bson.M{"_id": 3}),
				mongo.NewDeleteManyModel().SetFilter(bson.M{"_id": bson.M{"$gt": 100}}),
			})
			if err != nil {
				return err
			}
			assert.EqualValues(t, 1, res.InsertedCount, "InsertedCount")
			assert.EqualValues(t, 1+3+1, res.MatchedCount, "MatchedCount")
			assert.EqualValues(t, 1+3+1, res.ModifiedCount, "ModifiedCount")
			assert.EqualValues(t, 1, res.UpsertedCount, "UpsertedCount")
			assert.EqualValues(t, 1, res.DeletedCount, "DeletedCount")
			assert.Equal(t, map[int64]any{3: int32(7)}, res.UpsertedIDs, "UpsertedIDs")
			return nil
		})
		assert.Equal(t, []bson.D{
			d("_id", int32(1), "n", int32(11), "k", true),
			d("_id", int32(2), "r", int32(1)),
			d("_id", int32(7), "n", int32(7)),
		}, e.findD(t, "c", bson.M{}))
	})
}

// TestFidelityDuplicateKeyInTransaction: a duplicate _id in InsertMany in a
// transaction gives a BulkWriteException with one write error, DuplicateKey
// 11000, whether the insert is ordered or not (mongod fails the whole batch
// at the first write error in a transaction), and no error label; the
// server has aborted the transaction, so the next statement gets
// NoSuchTransaction (251) labelled TransientTransactionError. Returned as
// it is, the DuplicateKey is permanent: fn runs once and nothing is
// written.
func TestFidelityDuplicateKeyInTransaction(t *testing.T) {
	for _, ordered := range []bool{true, false} {
		t.Run(map[bool]string{true: "ordered", false: "unordered"}[ordered], func(t *testing.T) {
			eachServer(t, func(t *testing.T, e *env) {
				e.insert(t, "c", d("_id", int32(5)))
				coll := e.coll("c")
				r := txnmongo.New(e.client)
				calls := 0
				var insertErr, nextErr error
				err := r.Run(e.ctx(t), func(ctx context.Context, _ *mongo.Session) error {
					calls++
					_, insertErr = coll.InsertMany(ctx, []any{d("_id", int32(1)), d("_id", int32(5)), d("_id", int32(6)), d("_id", int32(5))},
						options.InsertMany().SetOrdered(ordered))
					_, nextErr = coll.InsertOne(ctx, d("_id", int32(7)))
					return insertErr
				})
				require.Error(t, err)
				assert.Equal(t, 1, calls, "a DuplicateKey is not retried")
				assert.True(t, mongo.IsDuplicateKeyError(err), "mongo.IsDuplicateKeyError(%v)", err)
				var bwe mongo.BulkWriteException
				require.ErrorAs(t, insertErr, &bwe)
				require.Len(t, bwe.WriteErrors, 1, "write errors: %v", bwe.WriteErrors)
				assert.Equal(t, 1, bwe.WriteErrors[0].Index)
				assert.Equal(t, 11000, bwe.WriteErrors[0].Code)
				assert.Contains(t, bwe.WriteErrors[0].Message, "E11000 duplicate key error")
				assert.Empty(t, bwe.Labels, "labels of the write error reply")
				assert.False(t, bwe.HasErrorLabel("TransientTransactionError"))

				ce := commandError(t, nextErr)
				assert.EqualValues(t, 251, ce.Code, "statement after the aborting error: %v", nextErr)
				assert.Equal(t, "NoSuchTransaction", ce.Name)
				assert.True(t, ce.HasErrorLabel("TransientTransactionError"), "labels %v", ce.Labels)

				assert.Equal(t, []bson.D{d("_id", int32(5))}, e.findD(t, "c", bson.M{}), "nothing of the transaction was written")
			})
		})
	}
}

// TestFidelityDuplicateKeyOutsideTransaction: an unordered InsertMany
// outside a transaction goes on past its duplicates (one write error each)
// and inserts the rest; an ordered one stops at the first.
func TestFidelityDuplicateKeyOutsideTransaction(t *testing.T) {
	eachServer(t, func(t *testing.T, e *env) {
		e.insert(t, "c", d("_id", int32(5)))
		coll := e.coll("c")
		ctx := e.ctx(t)
		docs := []any{d("_id", int32(1)), d("_id", int32(5)), d("_id", int32(6)), d("_id", int32(5))}
		_, err := coll.InsertMany(ctx, docs, options.InsertMany().SetOrdered(false))
		var bwe mongo.BulkWriteException
		require.ErrorAs(t, err, &bwe)
		require.Len(t, bwe.WriteErrors, 2)
		assert.Equal(t, []int{1, 3}, []int{bwe.WriteErrors[0].Index, bwe.WriteErrors[1].Index})
		assert.Len(t, e.findD(t, "c", bson.M{}), 3)

		_, err = coll.InsertMany(ctx, []any{d("_id", int32(7)), d("_id", int32(5)), d("_id", int32(8))})
		require.ErrorAs(t, err, &bwe)
		require.Len(t, bwe.WriteErrors, 1)
		assert.Equal(t, 1, bwe.WriteErrors[0].Index)
		ids := []any{}
		for _, doc := range e.find(t, "c", bson.M{}) {
			ids = append(ids, doc["_id"])
		}
		assert.Equal(t, []any{int32(1), int32(5), int32(6), int32(7)}, ids)
	})
}

// TestFidelitySnapshotIsolation: once a transaction has read, it keeps
// reading its snapshot: a document updated and one inserted by a write
// committed after that are not visible to it, while its own writes are;
// its update of the document changed after its snapshot is a WriteConflict
// (112, TransientTransactionError), and the Run's second attempt sees the
// new state and applies its increment once.
func TestFidelitySnapshotIsolation(t *testing.T) {
	eachServer(t, func(t *testing.T, e *env) {
		e.insert(t, "c", d("_id", "k", "v", int32(0)))
		coll := e.coll("c")
		other := e.admin.Database(e.db).Collection("c")
		rec := &recorder{}
		r := txnmongo.New(e.client, txn.WithObserver(rec), txn.WithBackoff(txn.FullJitter(time.Millisecond, 5*time.Millisecond)))
		var seen []int32
		calls := 0
		err := r.Run(e.ctx(t), func(ctx context.Context, _ *mongo.Session) error {
			calls++
			var k struct{ V int32 }
			if err := coll.FindOne(ctx, bson.M{"_id": "k"}).Decode(&k); err != nil {
				return err
			}
			seen = append(seen, k.V)
			if calls == 1 {
				octx := e.ctx(t)
				if _, err := other.UpdateOne(octx, bson.M{"_id": "k"}, bson.M{"$set": bson.M{"v": int32(100)}}); err != nil {
					return txn.Permanent(err)
				}
				if _, err := other.InsertOne(octx, d("_id", "late")); err != nil {
					return txn.Permanent(err)
				}
				k.V = -1
				if err := coll.FindOne(ctx, bson.M{"_id": "k"}).Decode(&k); err != nil {
					return err
				}
				assert.EqualValues(t, 0, k.V, "a committed update after the snapshot is not visible")
				assert.ErrorIs(t, coll.FindOne(ctx, bson.M{"_id": "late"}).Err(), mongo.ErrNoDocuments, "a committed insert after the snapshot is not visible")
			}
			if _, err := coll.InsertOne(ctx, d("_id", "mine", "attempt", int32(calls))); err != nil {
				return err
			}
			n, err := coll.CountDocuments(ctx, bson.M{})
			if err != nil {
				return err
			}
			if calls == 1 {
				assert.EqualValues(t, 2, n, "own insert counted, the late one not")
			} else {
				assert.EqualValues(t, 3, n)
			}
			_, err = coll.UpdateOne(ctx, bson.M{"_id": "k"}, bson.M{"$inc": bson.M{"v": int32(1)}})
			if calls == 1 {
				ce := commandError(t, err)
				assert.EqualValues(t, 112, ce.Code, "update of a document changed after the snapshot")
				assert.Equal(t, "WriteConflict", ce.Name)
				assert.True(t, ce.HasErrorLabel("TransientTransactionError"))
			}
			return err
		})
		require.NoError(t, err)
		assert.Equal(t, 2, calls)
		assert.Equal(t, []int32{0, 100}, seen)
		assert.Equal(t, []txn.Class{txn.ClassRetryable}, rec.retryClasses())
		assert.Equal(t, []bson.D{
			d("_id", "k", "v", int32(101)),
			d("_id", "late"),
			d("_id", "mine", "attempt", int32(2)),
		}, e.findD(t, "c", bson.M{}))
	})
}

// TestFidelitySecondWriterConflictsAtOnce: while a transaction holds a
// document it wrote, a second transaction's write of it fails at once
// (mongod does not make it wait) with WriteConflict 112 labelled
// TransientTransactionError, and the server aborts that second
// transaction (its next statement gets NoSuchTransaction 251). A Run in
// the second role retries until the first commits: both increments land
// exactly once.
func TestFidelitySecondWriterConflictsAtOnce(t *testing.T) {
	eachServer(t, func(t *testing.T, e *env) {
		e.insert(t, "c", d("_id", "k", "v", int32(0)))
		coll := e.coll("c")
		ctx := e.ctx(t)
		rA := txnmongo.New(e.client)
		rB := txnmongo.New(e.client, txn.MaxAttempts(100), txn.WithBackoff(txn.FullJitter(time.Millisecond, 10*time.Millisecond)))
		var bCalls atomic.Int32
		bFirstDone := make(chan struct{})
		bResult := make(chan error, 1)
		aCalls := 0
		err := rA.Run(ctx, func(actx context.Context, _ *mongo.Session) error {
			aCalls++
			if _, err := coll.UpdateOne(actx, bson.M{"_id": "k"}, bson.M{"$inc": bson.M{"v": int32(1)}}); err != nil {
				return err
			}
			if aCalls > 1 {
				return nil
			}
			// A raw second transaction.
			sess, err := e.client.StartSession()
			if err != nil {
				return txn.Permanent(err)
			}
			defer sess.EndSession(context.Background())
			if err := sess.StartTransaction(); err != nil {
				return txn.Permanent(err)
			}
			bctx := mongo.NewSessionContext(ctx, sess)
			// Were it made to wait, it would wait for this very
			// transaction, until the context ends: not a WriteConflict.
			_, werr := coll.UpdateOne(bctx, bson.M{"_id": "k"}, bson.M{"$inc": bson.M{"v": int32(1)}})
			ce := commandError(t, werr)
			assert.EqualValues(t, 112, ce.Code, "second writer: %v", werr)
			assert.True(t, ce.HasErrorLabel("TransientTransactionError"), "labels %v", ce.Labels)
			_, nerr := coll.InsertOne(bctx, d("_id", "b"))
			nce := commandError(t, nerr)
			assert.EqualValues(t, 251, nce.Code, "the server aborted the second transaction: %v", nerr)
			assert.True(t, nce.HasErrorLabel("TransientTransactionError"))
			_ = sess.AbortTransaction(ctx)

			// A Run in the second writer's role, on the test's context (fn's
			// would make it join this transaction).
			go func() {
				bResult <- rB.Run(ctx, func(ctx context.Context, _ *mongo.Session) error {
					n := bCalls.Add(1)
					_, err := coll.UpdateOne(ctx, bson.M{"_id": "k"}, bson.M{"$inc": bson.M{"v": int32(1)}})
					if n == 1 {
						close(bFirstDone)
					}
					return err
				})
			}()
			select {
			case <-bFirstDone:
			case <-ctx.Done():
				return txn.Permanent(ctx.Err())
			}
			return nil
		})
		require.NoError(t, err)
		require.NoError(t, <-bResult)
		assert.Equal(t, 1, aCalls)
		assert.GreaterOrEqual(t, bCalls.Load(), int32(2), "the Run in the second role lost its first attempt")
		assert.Equal(t, []bson.D{d("_id", "k", "v", int32(2))}, e.findD(t, "c", bson.M{}))
	})
}

// waitReceived waits until the server has received a command named name on
// collection coll outside any transaction: from mongotest's log, or from
// currentOp on a real server.
func (e *env) waitReceived(t *testing.T, name, coll string) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for time.Now().Before(deadline) {
		if e.srv != nil {
			for _, c := range e.srv.Commands() {
				if c.Name == name && c.Collection == coll && c.Database == e.db && !c.InTransaction {
					return
				}
			}
		} else {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			var res struct{ Inprog []bson.Raw }
			err := e.admin.Database("admin").RunCommand(ctx, d("currentOp", int32(1), "command."+name, coll, "ns", e.db+"."+coll)).Decode(&res)
			cancel()
			require.NoError(t, err, "currentOp")
			if len(res.Inprog) > 0 {
				return
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("the server never received %s on %s", name, coll)
}

// TestFidelityWriteOutsideTransactionWaits: a write outside any transaction
// to a document an open transaction has written waits until the
// transaction ends (mongod retries it internally), then applies on top of
// the transaction's write; the transaction is not aborted by it.
func TestFidelityWriteOutsideTransactionWaits(t *testing.T) {
	eachServer(t, func(t *testing.T, e *env) {
		e.insert(t, "c", d("_id", "k", "log", bson.A{}))
		coll := e.coll("c")
		ctx := e.ctx(t)
		r := txnmongo.New(e.client)
		calls := 0
		outside := make(chan error, 1)
		err := r.Run(ctx, func(tctx context.Context, _ *mongo.Session) error {
			calls++
			if _, err := coll.UpdateOne(tctx, bson.M{"_id": "k"}, bson.M{"$push": bson.M{"log": "txn"}}); err != nil {
				return err
			}
			go func() {
				_, err := coll.UpdateOne(ctx, bson.M{"_id": "k"}, bson.M{"$push": bson.M{"log": "outside"}})
				outside <- err
			}()
			e.waitReceived(t, "update", "c")
			select {
			case err := <-outside:
				t.Errorf("the write outside the transaction returned (%v) while the transaction held the document", err)
			default:
			}
			// The transaction goes on and reads its own write.
			var k struct{ Log []string }
			if err := coll.FindOne(tctx, bson.M{"_id": "k"}).Decode(&k); err != nil {
				return err
			}
			assert.Equal(t, []string{"txn"}, k.Log)
			return nil
		})
		require.NoError(t, err)
		assert.Equal(t, 1, calls, "the transaction was not disturbed")
		require.NoError(t, <-outside)
		assert.Equal(t, []bson.D{d("_id", "k", "log", bson.A{"txn", "outside"})}, e.findD(t, "c", bson.M{}))
	})
}

// TestFidelityAbortDiscardsEverything: an fn that fails after inserting,
// updating, deleting and creating a collection leaves no trace: the
// documents are as before and the collection it created implicitly does
// not exist (mongod 4.4+ creates it inside the transaction).
func TestFidelityAbortDiscardsEverything(t *testing.T) {
	eachServer(t, func(t *testing.T, e *env) {
		e.insert(t, "c", d("_id", int32(1), "n", int32(1)), d("_id", int32(2)))
		coll, fresh := e.coll("c"), e.coll("fresh")
		r := txnmongo.New(e.client)
		boom := errors.New("boom")
		err := r.Run(e.ctx(t), func(ctx context.Context, _ *mongo.Session) error {
			if _, err := coll.InsertOne(ctx, d("_id", int32(3))); err != nil {
				return err
			}
			if _, err := coll.UpdateOne(ctx, bson.M{"_id": 1}, bson.M{"$inc": bson.M{"n": int32(1)}}); err != nil {
				return err
			}
			if _, err := coll.DeleteOne(ctx, bson.M{"_id": 2}); err != nil {
				return err
			}
			if _, err := fresh.InsertOne(ctx, d("_id", int32(1))); err != nil {
				return err
			}
			n, err := fresh.CountDocuments(ctx, bson.M{})
			if err != nil {
				return err
			}
			assert.EqualValues(t, 1, n, "the new collection inside its transaction")
			return boom
		})
		require.ErrorIs(t, err, boom)
		assert.Equal(t, []bson.D{d("_id", int32(1), "n", int32(1)), d("_id", int32(2))}, e.findD(t, "c", bson.M{}))
		names, err := e.admin.Database(e.db).ListCollectionNames(e.ctx(t), bson.M{})
		require.NoError(t, err)
		assert.Equal(t, []string{"c"}, names, "collections after the abort")

		// Committed, the implicit creation stays.
		runOnce(t, e, func(ctx context.Context) error {
			_, err := fresh.InsertOne(ctx, d("_id", int32(1)))
			return err
		})
		names, err = e.admin.Database(e.db).ListCollectionNames(e.ctx(t), bson.M{})
		require.NoError(t, err)
		slices.Sort(names)
		assert.Equal(t, []string{"c", "fresh"}, names, "collections after the commit")
	})
}

// TestFidelityCommitTwice: committing a committed transaction again
// succeeds and applies nothing twice; aborting it then is refused by the
// driver.
func TestFidelityCommitTwice(t *testing.T) {
	eachServer(t, func(t *testing.T, e *env) {
		e.insert(t, "c", d("_id", "k", "v", int32(0)))
		ctx := e.ctx(t)
		sess, err := e.client.StartSession()
		require.NoError(t, err)
		defer sess.EndSession(ctx)
		require.NoError(t, sess.StartTransaction())
		sctx := mongo.NewSessionContext(ctx, sess)
		_, err = e.coll("c").UpdateOne(sctx, bson.M{"_id": "k"}, bson.M{"$inc": bson.M{"v": int32(1)}})
		require.NoError(t, err)
		require.NoError(t, sess.CommitTransaction(ctx))
		require.NoError(t, sess.CommitTransaction(ctx), "second commit")
		require.Error(t, sess.AbortTransaction(ctx), "abort after commit")
		assert.Equal(t, []bson.D{d("_id", "k", "v", int32(1))}, e.findD(t, "c", bson.M{}))
	})
}

// TestFidelityErrorShapes: unknown operators, stages and commands fail with
// mongod's codes, as command errors or write errors where mongod puts
// them, inside a transaction as outside.
func TestFidelityErrorShapes(t *testing.T) {
	eachServer(t, func(t *testing.T, e *env) {
		e.insert(t, "c", d("_id", int32(1), "n", int32(1)))
		coll := e.coll("c")
		cases := []struct {
			name string
			run  func(t *testing.T, ctx context.Context)
		}{
			{"unknown top-level operator", func(t *testing.T, ctx context.Context) {
				ce := commandError(t, coll.FindOne(ctx, bson.M{"$foo": 1}).Err())
				assert.EqualValues(t, 2, ce.Code)
				assert.Equal(t, "BadValue", ce.Name)
				assert.Contains(t, ce.Message, "unknown top level operator: $foo")
			}},
			{"unknown field operator", func(t *testing.T, ctx context.Context) {
				ce := commandError(t, coll.FindOne(ctx, bson.M{"n": bson.M{"$foo": 1}}).Err())
				assert.EqualValues(t, 2, ce.Code)
				assert.Equal(t, "BadValue", ce.Name)
				assert.Contains(t, ce.Message, "unknown operator: $foo")
			}},
			{"unknown update modifier", func(t *testing.T, ctx context.Context) {
				_, err := coll.UpdateOne(ctx, bson.M{"_id": 1}, bson.M{"$foo": bson.M{"n": 1}})
				var we mongo.WriteException
				if assert.ErrorAs(t, err, &we) && assert.Len(t, we.WriteErrors, 1) {
					assert.Equal(t, 9, we.WriteErrors[0].Code)
					assert.Contains(t, we.WriteErrors[0].Message, "Unknown modifier: $foo")
				}
			}},
			{"conflicting update paths", func(t *testing.T, ctx context.Context) {
				_, err := coll.UpdateOne(ctx, bson.M{"_id": 1}, bson.M{"$set": bson.M{"n": 1}, "$inc": bson.M{"n": 1}})
				var we mongo.WriteException
				if assert.ErrorAs(t, err, &we) && assert.Len(t, we.WriteErrors, 1) {
					assert.Equal(t, 40, we.WriteErrors[0].Code)
					assert.Contains(t, we.WriteErrors[0].Message, "would create a conflict at 'n'")
				}
			}},
			{"unknown pipeline stage", func(t *testing.T, ctx context.Context) {
				_, err := coll.Aggregate(ctx, mongo.Pipeline{{{Key: "$foo", Value: bson.D{}}}})
				ce := commandError(t, err)
				assert.EqualValues(t, 40324, ce.Code)
				assert.Contains(t, ce.Message, "Unrecognized pipeline stage name: '$foo'")
			}},
			{"unknown command", func(t *testing.T, ctx context.Context) {
				ce := commandError(t, e.client.Database(e.db).RunCommand(ctx, d("fooCommand", int32(1))).Err())
				assert.EqualValues(t, 59, ce.Code)
				assert.Equal(t, "CommandNotFound", ce.Name)
				assert.Contains(t, ce.Message, "no such command: 'fooCommand'")
			}},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				c.run(t, e.ctx(t))
				// In a transaction of its own: the error aborts it.
				sess, err := e.client.StartSession()
				require.NoError(t, err)
				defer sess.EndSession(context.Background())
				require.NoError(t, sess.StartTransaction())
				sctx := mongo.NewSessionContext(e.ctx(t), sess)
				require.NoError(t, coll.FindOne(sctx, bson.M{"_id": 1}).Err())
				c.run(t, sctx)
				_ = sess.AbortTransaction(e.ctx(t))
			})
		}
	})
}

// TestFidelityUniqueIndexConcurrentSignups: two Runs insert a user with the
// same email under a unique index at the same time. The one that loses the
// race gets a WriteConflict while the other is open (retried), then a
// DuplicateKey once it committed (permanent, returned as it is): exactly
// one user exists, and the loser's error is a duplicate key error.
func TestFidelityUniqueIndexConcurrentSignups(t *testing.T) {
	eachServer(t, func(t *testing.T, e *env) {
		ctx := e.ctx(t)
		users := e.coll("users")
		_, err := e.admin.Database(e.db).Collection("users").Indexes().CreateOne(ctx,
			mongo.IndexModel{Keys: d("email", int32(1)), Options: options.Index().SetUnique(true)})
		require.NoError(t, err)
		// NoAdaptive: the adaptive limit starts at 1, so a fresh Runner
		// would admit the second Run only after the first, or after its
		// stall escape, while the first waits for the second here.
		r := txnmongo.New(e.client, txn.NoAdaptive(), txn.MaxAttempts(100), txn.WithBackoff(txn.FullJitter(time.Millisecond, 10*time.Millisecond)))
		// The first insert to succeed holds its transaction open until the
		// other Run's insert has failed against it.
		lost := make(chan struct{})
		var lostOnce sync.Once
		var won atomic.Bool
		errs := make([]error, 2)
		done := make(chan int, 2)
		for i := range 2 {
			go func() {
				errs[i] = r.Run(ctx, func(ctx context.Context, _ *mongo.Session) error {
					if _, err := users.InsertOne(ctx, d("_id", int32(i), "email", "same@example.com")); err != nil {
						lostOnce.Do(func() { close(lost) })
						return err
					}
					if won.CompareAndSwap(false, true) {
						select {
						case <-lost:
						case <-ctx.Done():
							return txn.Permanent(ctx.Err())
						}
					}
					return nil
				})
				done <- i
			}()
		}
		<-done
		<-done
		var dups, oks int
		for _, err := range errs {
			switch {
			case err == nil:
				oks++
			case mongo.IsDuplicateKeyError(err):
				dups++
				assert.Equal(t, txn.ClassPermanent, txnmongo.Classify(err))
			default:
				t.Errorf("unexpected error: %v", err)
			}
		}
		assert.Equal(t, 1, oks, "errors %v", errs)
		assert.Equal(t, 1, dups, "errors %v", errs)
		assert.Len(t, e.findD(t, "users", bson.M{}), 1)
	})
}

// TestFidelityCounterUpsert: many Runs take numbers from a counter document
// that does not exist yet, with FindOneAndUpdate $inc, upsert and
// ReturnDocument After, and record each number in a document of its own.
// Concurrent upserts of the missing counter and increments conflict and
// are retried: every number from 1 to N is taken exactly once.
func TestFidelityCounterUpsert(t *testing.T) {
	eachServer(t, func(t *testing.T, e *env) {
		const workers, each = 4, 10
		ctx := e.ctx(t)
		r := txnmongo.New(e.client, txn.MaxAttempts(200), txn.WithBackoff(txn.FullJitter(time.Millisecond, 20*time.Millisecond)))
		counters, taken := e.coll("counters"), e.coll("taken")
		var wg sync.WaitGroup
		errs := make(chan error, workers*each)
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range each {
					errs <- r.Run(ctx, func(ctx context.Context, _ *mongo.Session) error {
						var c struct{ N int32 }
						err := counters.FindOneAndUpdate(ctx, bson.M{"_id": "orders"}, bson.M{"$inc": bson.M{"n": int32(1)}},
							options.FindOneAndUpdate().SetUpsert(true).SetReturnDocument(options.After)).Decode(&c)
						if err != nil {
							return err
						}
						_, err = taken.InsertOne(ctx, d("_id", c.N, "by", int32(w*each+i)))
						return err
					})
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			require.NoError(t, err)
		}
		docs := e.findD(t, "taken", bson.M{})
		require.Len(t, docs, workers*each)
		for i, doc := range docs {
			require.Equal(t, int32(i+1), doc[0].Value, "numbers taken: %v", docs)
		}
		assert.Equal(t, []bson.D{d("_id", "orders", "n", int32(workers*each))}, e.findD(t, "counters", bson.M{}))
	})
}
