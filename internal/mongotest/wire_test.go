package mongotest

import (
	"encoding/binary"
	"fmt"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.mongodb.org/mongo-driver/v2/bson"
)

func marshal(t *testing.T, v any) bson.Raw {
	t.Helper()
	b, err := bson.Marshal(v)
	require.NoError(t, err)
	return b
}

// roundTrip writes msg to nc and reads one reply.
func roundTrip(t *testing.T, nc net.Conn, msg []byte) (header, []byte) {
	t.Helper()
	require.NoError(t, nc.SetDeadline(time.Now().Add(5*time.Second)))
	_, err := nc.Write(msg)
	require.NoError(t, err)
	h, body, err := readMessage(nc)
	require.NoError(t, err)
	return h, body
}

// buildOpQuery builds a legacy OP_QUERY command message.
func buildOpQuery(requestID int32, ns string, cmd bson.Raw) []byte {
	dst := appendHeader(nil, requestID, 0, opQuery)
	dst = binary.LittleEndian.AppendUint32(dst, 0)
	dst = append(dst, ns...)
	dst = append(dst, 0)
	dst = binary.LittleEndian.AppendUint32(dst, 0)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(0xffffffff))
	dst = append(dst, cmd...)
	binary.LittleEndian.PutUint32(dst, uint32(len(dst)))
	return dst
}

// opMsgWithSequence builds an OP_MSG with a body and one document sequence.
func opMsgWithSequence(requestID int32, flags uint32, body bson.Raw, id string, docs ...bson.Raw) []byte {
	dst := appendHeader(nil, requestID, 0, opMsg)
	dst = binary.LittleEndian.AppendUint32(dst, flags)
	dst = append(dst, 0)
	dst = append(dst, body...)
	dst = append(dst, 1)
	start := len(dst)
	dst = binary.LittleEndian.AppendUint32(dst, 0)
	dst = append(dst, id...)
	dst = append(dst, 0)
	for _, d := range docs {
		dst = append(dst, d...)
	}
	binary.LittleEndian.PutUint32(dst[start:], uint32(len(dst)-start))
	binary.LittleEndian.PutUint32(dst, uint32(len(dst)))
	return dst
}

func TestRawWireProtocol(t *testing.T) {
	s, err := Start()
	require.NoError(t, err)
	defer s.Close()
	nc, err := net.Dial("tcp", s.Addr())
	require.NoError(t, err)
	defer nc.Close()

	// Legacy OP_QUERY isMaster gets an OP_REPLY.
	h, body := roundTrip(t, nc, buildOpQuery(7, "admin.$cmd", marshal(t, bson.D{{Key: "isMaster", Value: 1}, {Key: "helloOk", Value: true}})))
	require.EqualValues(t, opReply, h.opCode, "reply header %+v", h)
	require.EqualValues(t, 7, h.responseTo, "reply header %+v", h)
	n := binary.LittleEndian.Uint32(body[16:])
	require.EqualValues(t, 1, n, "numberReturned = %d", n)
	reply := bson.Raw(body[20:])
	require.True(t, reply.Lookup("ismaster").Boolean(), "isMaster reply %v", reply)
	require.True(t, reply.Lookup("helloOk").Boolean(), "isMaster reply %v", reply)
	require.EqualValues(t, "rs0", reply.Lookup("setName").StringValue(), "isMaster reply %v", reply)

	// Other commands are refused over OP_QUERY, as by MongoDB 7.0.
	_, body = roundTrip(t, nc, buildOpQuery(8, "test.$cmd", marshal(t, bson.D{{Key: "ping", Value: 1}})))
	code := bson.Raw(body[20:]).Lookup("code").Int32()
	require.EqualValues(t, codeUnsupportedOpQueryCommand, code, "ping over OP_QUERY: code %d", code)

	// OP_MSG insert with a document sequence.
	ins := marshal(t, bson.D{{Key: "insert", Value: "c"}, {Key: "$db", Value: "test"}})
	h, body = roundTrip(t, nc, opMsgWithSequence(9, 0, ins, "documents",
		marshal(t, bson.D{{Key: "_id", Value: 1}}), marshal(t, bson.D{{Key: "_id", Value: 2}})))
	require.EqualValues(t, opMsg, h.opCode, "reply header %+v", h)
	require.EqualValues(t, 9, h.responseTo, "reply header %+v", h)
	_, r, err := parseOpMsg(body)
	require.NoError(t, err)
	require.EqualValues(t, 2, r.Lookup("n").Int32(), "insert reply %v", r)
	require.EqualValues(t, 1, r.Lookup("ok").Double(), "insert reply %v", r)

	// moreToCome (an unacknowledged write) gets no reply; the next request does.
	_, err = nc.Write(opMsgWithSequence(10, msgMoreToCome, ins, "documents", marshal(t, bson.D{{Key: "_id", Value: 3}})))
	require.NoError(t, err)
	h, _ = roundTrip(t, nc, opMsgWithSequence(11, 0, ins, "documents", marshal(t, bson.D{{Key: "_id", Value: 4}})))
	require.EqualValues(t, 11, h.responseTo, "reply to %d, want 11", h.responseTo)
	require.Len(t, s.Docs("test", "c"), 4)

	// A field given twice, in the body and as a sequence, is malformed: the
	// server hangs up.
	bad := marshal(t, bson.D{{Key: "insert", Value: "c"}, {Key: "documents", Value: bson.A{}}, {Key: "$db", Value: "test"}})
	_, err = nc.Write(opMsgWithSequence(12, 0, bad, "documents"))
	require.NoError(t, err)
	_, _, err = readMessage(nc)
	require.Error(t, err, "malformed message answered")
}

func TestCloseStopsEveryGoroutine(t *testing.T) {
	before := runtime.NumGoroutine()
	s, err := Start()
	require.NoError(t, err)
	var conns []net.Conn
	for i := 0; i < 3; i++ {
		nc, err := net.Dial("tcp", s.Addr())
		require.NoError(t, err)
		conns = append(conns, nc)
	}
	// One connection waits in a blocked fail point when the server stops.
	require.NoError(t, s.SetFailPoint(FailPoint{Commands: []string{"ping"}, BlockTime: time.Hour}))
	ping := marshal(t, bson.D{{Key: "ping", Value: 1}, {Key: "$db", Value: "admin"}})
	msg := buildOpMsg(1, 0, ping)
	_, err = conns[0].Write(msg)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return len(s.Commands()) > 0 }, 5*time.Second, time.Millisecond, "ping never arrived")
	s.Close()
	for _, nc := range conns {
		_ = nc.Close()
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			require.Failf(t, "goroutines left", "%d goroutines after Close, %d before:\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestMatches(t *testing.T) {
	d := marshal(t, bson.D{
		{Key: "_id", Value: 1},
		{Key: "n", Value: int64(5)},
		{Key: "f", Value: 2.5},
		{Key: "s", Value: "abc"},
		{Key: "tags", Value: bson.A{"x", "y"}},
		{Key: "sub", Value: bson.D{{Key: "a", Value: int32(1)}}},
		{Key: "nil", Value: nil},
	})
	cases := []struct {
		filter bson.D
		want   bool
	}{
		{bson.D{}, true},
		{bson.D{{Key: "_id", Value: 1.0}}, true},
		{bson.D{{Key: "n", Value: int32(5)}}, true},
		{bson.D{{Key: "n", Value: bson.D{{Key: "$gt", Value: 4}, {Key: "$lte", Value: 5}}}}, true},
		{bson.D{{Key: "n", Value: bson.D{{Key: "$gt", Value: "4"}}}}, false},
		{bson.D{{Key: "f", Value: bson.D{{Key: "$lt", Value: 3}}}}, true},
		{bson.D{{Key: "s", Value: bson.D{{Key: "$in", Value: bson.A{"x", "abc"}}}}}, true},
		{bson.D{{Key: "s", Value: bson.D{{Key: "$nin", Value: bson.A{"abc"}}}}}, false},
		{bson.D{{Key: "tags", Value: "y"}}, true},
		{bson.D{{Key: "tags", Value: bson.A{"x", "y"}}}, true},
		{bson.D{{Key: "tags", Value: "z"}}, false},
		{bson.D{{Key: "sub.a", Value: 1}}, true},
		{bson.D{{Key: "sub", Value: bson.D{{Key: "a", Value: 1}}}}, true},
		{bson.D{{Key: "missing", Value: nil}}, true},
		{bson.D{{Key: "nil", Value: nil}}, true},
		{bson.D{{Key: "missing", Value: bson.D{{Key: "$exists", Value: false}}}}, true},
		{bson.D{{Key: "s", Value: bson.D{{Key: "$exists", Value: false}}}}, false},
		{bson.D{{Key: "n", Value: bson.D{{Key: "$ne", Value: 5}}}}, false},
		{bson.D{{Key: "n", Value: bson.D{{Key: "$not", Value: bson.D{{Key: "$gt", Value: 10}}}}}}, true},
		{bson.D{{Key: "$or", Value: bson.A{bson.D{{Key: "n", Value: 1}}, bson.D{{Key: "s", Value: "abc"}}}}}, true},
		{bson.D{{Key: "$and", Value: bson.A{bson.D{{Key: "n", Value: 5}}, bson.D{{Key: "s", Value: "x"}}}}}, false},
		{bson.D{{Key: "$nor", Value: bson.A{bson.D{{Key: "n", Value: 1}}}}}, true},
	}
	for _, c := range cases {
		t.Run(fmt.Sprint(c.filter), func(t *testing.T) {
			got, err := matches(d, marshal(t, c.filter))
			assert.Nil(t, err, "matches(%v)", c.filter)
			assert.Equal(t, c.want, got, "matches(%v)", c.filter)
		})
	}
	for _, op := range []string{"$near", "$foo"} {
		_, err := matches(d, marshal(t, bson.D{{Key: "n", Value: bson.D{{Key: op, Value: "x"}}}}))
		assert.NotNil(t, err, "unsupported operator %s accepted", op)
	}
}

func TestApplyUpdate(t *testing.T) {
	old := marshal(t, bson.D{{Key: "_id", Value: 1}, {Key: "a", Value: int32(1)}, {Key: "big", Value: int32(2147483647)}})
	now := time.Now()
	cases := []struct {
		update bson.D
		want   bson.D
	}{
		{
			bson.D{{Key: "$set", Value: bson.D{{Key: "b.c", Value: "x"}}}, {Key: "$inc", Value: bson.D{{Key: "a", Value: int32(2)}}}},
			bson.D{{Key: "_id", Value: 1}, {Key: "a", Value: int32(3)}, {Key: "big", Value: int32(2147483647)}, {Key: "b", Value: bson.D{{Key: "c", Value: "x"}}}},
		},
		{
			bson.D{{Key: "$inc", Value: bson.D{{Key: "big", Value: int32(1)}, {Key: "new", Value: 1.5}}}},
			bson.D{{Key: "_id", Value: 1}, {Key: "a", Value: int32(1)}, {Key: "big", Value: int64(2147483648)}, {Key: "new", Value: 1.5}},
		},
		{
			bson.D{{Key: "$unset", Value: bson.D{{Key: "a", Value: ""}}}, {Key: "$push", Value: bson.D{{Key: "l", Value: 1}}}},
			bson.D{{Key: "_id", Value: 1}, {Key: "big", Value: int32(2147483647)}, {Key: "l", Value: bson.A{int32(1)}}},
		},
		{
			bson.D{{Key: "x", Value: 1}},
			bson.D{{Key: "_id", Value: 1}, {Key: "x", Value: int32(1)}},
		},
		{
			bson.D{{Key: "$max", Value: bson.D{{Key: "a", Value: int32(0)}}}, {Key: "$min", Value: bson.D{{Key: "big", Value: int32(0)}}}},
			bson.D{{Key: "_id", Value: 1}, {Key: "a", Value: int32(1)}, {Key: "big", Value: int32(0)}},
		},
	}
	for _, c := range cases {
		t.Run(fmt.Sprint(c.update), func(t *testing.T) {
			got, err := applyUpdate(old, docValue(marshal(t, c.update)), false, now)
			require.Nil(t, err, "applyUpdate(%v)", c.update)
			want := marshal(t, c.want)
			assert.EqualValues(t, string(want), string(got), "applyUpdate(%v) = %v, want %v", c.update, got, want)
		})
	}
	for _, bad := range []bson.D{
		{{Key: "$set", Value: bson.D{{Key: "_id", Value: 2}}}},
		{{Key: "$inc", Value: bson.D{{Key: "a", Value: "x"}}}},
		{{Key: "$set", Value: bson.D{{Key: "a.b", Value: 1}}}},
		{{Key: "$bogus", Value: bson.D{{Key: "a", Value: 1}}}},
	} {
		t.Run("bad "+fmt.Sprint(bad), func(t *testing.T) {
			_, err := applyUpdate(old, docValue(marshal(t, bad)), false, now)
			assert.NotNil(t, err, "applyUpdate(%v) succeeded", bad)
		})
	}
}

func TestValueKeyTreatsEqualNumbersAlike(t *testing.T) {
	keys := map[string]bool{}
	for _, v := range []any{int32(7), int64(7), 7.0} {
		keys[valueKey(mustValue(v))] = true
	}
	require.EqualValues(t, 1, len(keys), "keys %v", keys)
	require.NotEqual(t, valueKey(mustValue(7)), valueKey(mustValue("7")), "string and number share a key")
}
