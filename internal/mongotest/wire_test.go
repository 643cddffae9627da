package mongotest

import (
	"encoding/binary"
	"net"
	"runtime"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
)

func marshal(t *testing.T, v any) bson.Raw {
	t.Helper()
	b, err := bson.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// roundTrip writes msg to nc and reads one reply.
func roundTrip(t *testing.T, nc net.Conn, msg []byte) (header, []byte) {
	t.Helper()
	if err := nc.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := nc.Write(msg); err != nil {
		t.Fatal(err)
	}
	h, body, err := readMessage(nc)
	if err != nil {
		t.Fatal(err)
	}
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
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	nc, err := net.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()

	// Legacy OP_QUERY isMaster gets an OP_REPLY.
	h, body := roundTrip(t, nc, buildOpQuery(7, "admin.$cmd", marshal(t, bson.D{{Key: "isMaster", Value: 1}, {Key: "helloOk", Value: true}})))
	if h.opCode != opReply || h.responseTo != 7 {
		t.Fatalf("reply header %+v", h)
	}
	if n := binary.LittleEndian.Uint32(body[16:]); n != 1 {
		t.Fatalf("numberReturned = %d", n)
	}
	reply := bson.Raw(body[20:])
	if !reply.Lookup("ismaster").Boolean() || !reply.Lookup("helloOk").Boolean() || reply.Lookup("setName").StringValue() != "rs0" {
		t.Fatalf("isMaster reply %v", reply)
	}

	// Other commands are refused over OP_QUERY, as by MongoDB 7.0.
	_, body = roundTrip(t, nc, buildOpQuery(8, "test.$cmd", marshal(t, bson.D{{Key: "ping", Value: 1}})))
	if code := bson.Raw(body[20:]).Lookup("code").Int32(); code != codeUnsupportedOpQueryCommand {
		t.Fatalf("ping over OP_QUERY: code %d", code)
	}

	// OP_MSG insert with a document sequence.
	ins := marshal(t, bson.D{{Key: "insert", Value: "c"}, {Key: "$db", Value: "test"}})
	h, body = roundTrip(t, nc, opMsgWithSequence(9, 0, ins, "documents",
		marshal(t, bson.D{{Key: "_id", Value: 1}}), marshal(t, bson.D{{Key: "_id", Value: 2}})))
	if h.opCode != opMsg || h.responseTo != 9 {
		t.Fatalf("reply header %+v", h)
	}
	_, r, err := parseOpMsg(body)
	if err != nil {
		t.Fatal(err)
	}
	if r.Lookup("n").Int32() != 2 || r.Lookup("ok").Double() != 1 {
		t.Fatalf("insert reply %v", r)
	}

	// moreToCome (an unacknowledged write) gets no reply; the next request does.
	_, err = nc.Write(opMsgWithSequence(10, msgMoreToCome, ins, "documents", marshal(t, bson.D{{Key: "_id", Value: 3}})))
	if err != nil {
		t.Fatal(err)
	}
	h, _ = roundTrip(t, nc, opMsgWithSequence(11, 0, ins, "documents", marshal(t, bson.D{{Key: "_id", Value: 4}})))
	if h.responseTo != 11 {
		t.Fatalf("reply to %d, want 11", h.responseTo)
	}
	if got := len(s.Docs("test", "c")); got != 4 {
		t.Fatalf("%d documents, want 4", got)
	}

	// A field given twice, in the body and as a sequence, is malformed: the
	// server hangs up.
	bad := marshal(t, bson.D{{Key: "insert", Value: "c"}, {Key: "documents", Value: bson.A{}}, {Key: "$db", Value: "test"}})
	if _, err := nc.Write(opMsgWithSequence(12, 0, bad, "documents")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := readMessage(nc); err == nil {
		t.Fatal("malformed message answered")
	}
}

func TestCloseStopsEveryGoroutine(t *testing.T) {
	before := runtime.NumGoroutine()
	s, err := Start()
	if err != nil {
		t.Fatal(err)
	}
	var conns []net.Conn
	for i := 0; i < 3; i++ {
		nc, err := net.Dial("tcp", s.Addr())
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, nc)
	}
	// One connection waits in a blocked fail point when the server stops.
	if err := s.SetFailPoint(FailPoint{Commands: []string{"ping"}, BlockTime: time.Hour}); err != nil {
		t.Fatal(err)
	}
	ping := marshal(t, bson.D{{Key: "ping", Value: 1}, {Key: "$db", Value: "admin"}})
	msg := buildOpMsg(1, 0, ping)
	if _, err := conns[0].Write(msg); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); len(s.Commands()) == 0; {
		if time.Now().After(deadline) {
			t.Fatal("ping never arrived")
		}
		time.Sleep(time.Millisecond)
	}
	s.Close()
	for _, nc := range conns {
		_ = nc.Close()
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("%d goroutines after Close, %d before:\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
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
		got, err := matches(d, marshal(t, c.filter))
		if err != nil || got != c.want {
			t.Errorf("matches(%v) = %v, %v; want %v", c.filter, got, err, c.want)
		}
	}
	if _, err := matches(d, marshal(t, bson.D{{Key: "n", Value: bson.D{{Key: "$regex", Value: "x"}}}})); err == nil {
		t.Error("unsupported operator accepted")
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
		got, err := applyUpdate(old, docValue(marshal(t, c.update)), false, now)
		if err != nil {
			t.Errorf("applyUpdate(%v): %v", c.update, err)
			continue
		}
		if want := marshal(t, c.want); string(got) != string(want) {
			t.Errorf("applyUpdate(%v) = %v, want %v", c.update, got, want)
		}
	}
	for _, bad := range []bson.D{
		{{Key: "$set", Value: bson.D{{Key: "_id", Value: 2}}}},
		{{Key: "$inc", Value: bson.D{{Key: "a", Value: "x"}}}},
		{{Key: "$set", Value: bson.D{{Key: "a.b", Value: 1}}}},
		{{Key: "$bogus", Value: bson.D{{Key: "a", Value: 1}}}},
	} {
		if _, err := applyUpdate(old, docValue(marshal(t, bad)), false, now); err == nil {
			t.Errorf("applyUpdate(%v) succeeded", bad)
		}
	}
}

func TestValueKeyTreatsEqualNumbersAlike(t *testing.T) {
	keys := map[string]bool{}
	for _, v := range []any{int32(7), int64(7), 7.0} {
		keys[valueKey(mustValue(v))] = true
	}
	if len(keys) != 1 {
		t.Fatalf("keys %v", keys)
	}
	if valueKey(mustValue("7")) == valueKey(mustValue(7)) {
		t.Fatal("string and number share a key")
	}
}
