package handover

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files of this build's version")

// golden are the messages of each version, one of each type, as
// testdata/v<version>/*.json pin them: later builds must read these
// files, those of older versions included (an older childproc or hitless
// still writes them).
var golden = map[string]Message{
	"v1/hello":   {Version: 1, Type: TypeHello, Kinds: []string{HTTPKind("tcp", "127.0.0.1:8080"), StreamKind("ws-echo")}},
	"v1/query":   {Version: 1, Type: TypeQuery, ID: 1},
	"v1/adopter": {Version: 1, Type: TypeAdopter, ID: 1, Adopter: 7, Kinds: []string{HTTPKind("tcp", "127.0.0.1:8080")}},
	"v1/conn":    {Version: 1, Type: TypeConn, ID: 42, Kind: StreamKind("ws-echo"), State: []byte(`{"seq":17}`), From: 6},
	"v1/taken":   {Version: 1, Type: TypeTaken, ID: 42},
	"v1/refused": {Version: 1, Type: TypeRefused, ID: 43, Reason: "no serving generation adopts connections"},
	"v1/adopted": {Version: 1, Type: TypeAdopted, ID: 42},
	"v1/closed":  {Version: 1, Type: TypeClosed, ID: 44, Reason: "not adopted within 5s"},
	"v1/report":  {Version: 1, Type: TypeReport, Closed: 3, ClosedIdle: 1},

	"v2/hello":   {Version: 2, Type: TypeHello, Kinds: []string{HTTPKind("tcp", "127.0.0.1:8080"), StreamKind("ws-echo")}},
	"v2/query":   {Version: 2, Type: TypeQuery, ID: 1},
	"v2/adopter": {Version: 2, Type: TypeAdopter, ID: 1, Adopter: 7, Kinds: []string{HTTPKind("tcp", "127.0.0.1:8080")}},
	"v2/conn":    {Version: 2, Type: TypeConn, ID: 42, Kind: StreamKind("ws-echo"), State: []byte(`{"seq":17}`), From: 6},
	// A batch as a draining generation sends it, and as hitless passes
	// it on (under its own ids, with the generation it comes from).
	"v2/conns":        {Version: 2, Type: TypeConns, IDs: []uint64{5, 6, 7}, Kind: HTTPKind("tcp", "127.0.0.1:8080")},
	"v2/conns-passed": {Version: 2, Type: TypeConns, IDs: []uint64{901, 902, 903}, Kind: HTTPKind("tcp", "127.0.0.1:8080"), From: 6},
	"v2/taken":        {Version: 2, Type: TypeTaken, IDs: []uint64{5, 7}},
	"v2/refused":      {Version: 2, Type: TypeRefused, IDs: []uint64{6}, Reason: "no serving generation adopts connections"},
	"v2/adopted":      {Version: 2, Type: TypeAdopted, IDs: []uint64{901, 903}},
	"v2/closed":       {Version: 2, Type: TypeClosed, IDs: []uint64{44}, Reason: "not adopted within 5s"},
	"v2/report":       {Version: 2, Type: TypeReport, Closed: 3, ClosedIdle: 1},
}

func TestGolden(t *testing.T) {
	for name, m := range golden {
		path := filepath.Join("testdata", name+".json")
		b, err := Marshal(m)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if *update && m.Version == Version {
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		want, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%s: %v (run with -update to write it)", name, err)
		}
		if !bytes.Equal(b, bytes.TrimSpace(want)) {
			t.Errorf("%s encodes as\n%s\nthe golden file holds\n%s", name, b, want)
		}
		got, err := Unmarshal(want)
		if err != nil {
			t.Fatalf("%s: golden file: %v", name, err)
		}
		if !reflect.DeepEqual(got, m) {
			t.Errorf("%s: golden file reads as %+v, want %+v", name, got, m)
		}
		if !got.Known() {
			t.Errorf("%s: type not known", name)
		}
	}
	// Every golden file on disk is read: none may be dropped from the map.
	files, _ := filepath.Glob(filepath.Join("testdata", "v*", "*.json"))
	for _, f := range files {
		b, _ := os.ReadFile(f)
		if _, err := Unmarshal(b); err != nil {
			t.Errorf("%s: %v", f, err)
		}
		name := strings.TrimSuffix(filepath.ToSlash(strings.TrimPrefix(f, "testdata"+string(filepath.Separator))), ".json")
		if _, ok := golden[name]; !ok {
			t.Errorf("%s is not in the golden map", f)
		}
	}
	// Each version this build reads has its files.
	for v := MinVersion; v <= Version; v++ {
		if fs, _ := filepath.Glob(filepath.Join("testdata", fmt.Sprintf("v%d", v), "*.json")); len(fs) == 0 {
			t.Errorf("no golden files for version %d", v)
		}
	}
}

// The batch's rules: what version 1 cannot say, and a batch's bounds.
func TestBatchRules(t *testing.T) {
	kind := HTTPKind("tcp", "127.0.0.1:1")
	for _, tc := range []struct {
		m    Message
		want string
	}{
		{Message{Version: 1, Type: TypeConns, IDs: []uint64{1}, Kind: kind}, "version"},
		{Message{Version: 1, Type: TypeTaken, IDs: []uint64{1}}, "version"},
		{Message{Version: 2, Type: TypeConns, Kind: kind}, "0 connections"},
		{Message{Version: 2, Type: TypeConns, IDs: make([]uint64, MaxBatch+1), Kind: kind}, "connections"},
		{Message{Version: 2, Type: TypeConns, IDs: []uint64{1}}, "without a kind"},
		{Message{Version: 2, Type: TypeConns, ID: 3, IDs: []uint64{1}, Kind: kind}, "with an id"},
		{Message{Version: 2, Type: TypeAdopted, IDs: make([]uint64, MaxBatch+1)}, "ids in one message"},
	} {
		if _, err := Marshal(tc.m); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Marshal(%+v) = %v, want an error saying %q", tc.m, err, tc.want)
		}
	}
	if _, err := Marshal(Message{Version: 2, Type: TypeConns, IDs: make([]uint64, MaxBatch), Kind: kind}); err != nil {
		t.Errorf("a full batch: %v", err)
	}
	m := Message{Version: 2, Type: TypeTaken, ID: 4, IDs: []uint64{5, 6}}
	if got := m.Answered(); !reflect.DeepEqual(got, []uint64{4, 5, 6}) {
		t.Errorf("Answered = %v", got)
	}
	if got := (Message{Version: 1, Type: TypeTaken, ID: 4}).Answered(); !reflect.DeepEqual(got, []uint64{4}) {
		t.Errorf("Answered of version 1 = %v", got)
	}
}

func TestUnmarshalRefuses(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{fmt.Sprintf(`{"v":%d,"type":"hello"}`, Version+1), "version"},
		{`{"v":0,"type":"hello"}`, "version"},
		{`{"v":1}`, "without a type"},
		{`{"v":1,"type":"conn","id":1}`, "without a kind"},
		{`{"v":1,"type":"hello","kinds":["a\nb"]}`, "printable"},
		{`not json`, "decode"},
	} {
		_, err := Unmarshal([]byte(tc.in))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Unmarshal(%s) = %v, want an error saying %q", tc.in, err, tc.want)
		}
	}
	if _, err := Unmarshal(fmt.Appendf(nil, `{"v":%d,"type":"hello"}`, Version+1)); !errors.Is(err, ErrVersion) {
		t.Errorf("a newer version: %v, want ErrVersion", err)
	}
	// A type this build does not know, and fields it does not know, are
	// read: the receiver ignores the message, not the channel.
	m, err := Unmarshal([]byte(`{"v":1,"type":"resize","window":7}`))
	if err != nil || m.Known() {
		t.Errorf("an unknown type: %+v, %v", m, err)
	}
	if _, err := Marshal(Message{Version: 1, Type: TypeConn, Kind: "k", State: make([]byte, MaxState+1)}); err == nil {
		t.Error("a state over MaxState was encoded")
	}
	if _, err := Marshal(Message{Version: 1, Type: TypeConn, Kind: "k", State: make([]byte, MaxState)}); err != nil {
		t.Errorf("a state of MaxState: %v", err)
	}
}

func FuzzUnmarshal(f *testing.F) {
	for _, m := range golden {
		b, _ := Marshal(m)
		f.Add(b)
	}
	// Found by the fuzzer: an empty list read as empty, written as absent.
	f.Add([]byte(`{"v":1,"tYpe":"0","kinds":[],"state":""}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Unmarshal(b)
		if err != nil {
			return
		}
		// What was read writes again, and reads the same.
		b2, err := Marshal(m)
		if err != nil {
			t.Fatalf("read %+v but cannot write it: %v", m, err)
		}
		m2, err := Unmarshal(b2)
		if err != nil || !reflect.DeepEqual(m, m2) {
			t.Fatalf("round trip: %+v, %v; want %+v", m2, err, m)
		}
	})
}
