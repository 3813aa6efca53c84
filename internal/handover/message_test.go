package handover

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files of this build's version")

// golden are the messages of version 1, one of each type, as
// testdata/v1/*.json pins them: later builds must read these files.
var golden = map[string]Message{
	"hello":   {Version: 1, Type: TypeHello, Kinds: []string{HTTPKind("tcp", "127.0.0.1:8080"), StreamKind("ws-echo")}},
	"query":   {Version: 1, Type: TypeQuery, ID: 1},
	"adopter": {Version: 1, Type: TypeAdopter, ID: 1, Adopter: 7, Kinds: []string{HTTPKind("tcp", "127.0.0.1:8080")}},
	"conn":    {Version: 1, Type: TypeConn, ID: 42, Kind: StreamKind("ws-echo"), State: []byte(`{"seq":17}`), From: 6},
	"taken":   {Version: 1, Type: TypeTaken, ID: 42},
	"refused": {Version: 1, Type: TypeRefused, ID: 43, Reason: "no serving generation adopts connections"},
	"adopted": {Version: 1, Type: TypeAdopted, ID: 42},
	"closed":  {Version: 1, Type: TypeClosed, ID: 44, Reason: "not adopted within 5s"},
	"report":  {Version: 1, Type: TypeReport, Closed: 3, ClosedIdle: 1},
}

func TestGolden(t *testing.T) {
	for name, m := range golden {
		path := filepath.Join("testdata", "v1", name+".json")
		b, err := Marshal(m)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if *update {
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
	}
}

func TestUnmarshalRefuses(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{`{"v":2,"type":"hello"}`, "version"},
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
	if _, err := Unmarshal([]byte(`{"v":2,"type":"hello"}`)); !errors.Is(err, ErrVersion) {
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
