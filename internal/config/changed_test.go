//go:build linux

package config

import (
	"slices"
	"strings"
	"testing"
)

func TestChanged(t *testing.T) {
	before := "# app\nlisten:\n  - tcp://127.0.0.1:8080\ndrain_timeout: 30s\nrestart:\n  backoff_min: 100ms\n  backoff_max: 30s\n"
	for _, tc := range []struct {
		name, after string
		want        []string
	}{
		{"same, comments and layout aside", "listen: [tcp://127.0.0.1:8080]\n# changed comment\ndrain_timeout: 30s\nrestart: {backoff_min: 100ms, backoff_max: 30s}\n", nil},
		{"a listener added, a value changed, one nested, one added",
			"listen:\n  - tcp://127.0.0.1:8080\n  - tcp://127.0.0.1:8081\ndrain_timeout: 5s\nrestart:\n  backoff_min: 1s\n  backoff_max: 30s\npid_file: /run/app.pid\n",
			[]string{"drain_timeout", "listen", "pid_file", "restart.backoff_min"}},
		{"everything removed", "", []string{"drain_timeout", "listen", "restart"}},
	} {
		got, err := Changed([]byte(before), []byte(tc.after))
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("%s: %v, %v; want %v", tc.name, got, err, tc.want)
		}
	}
	if _, err := Changed([]byte(before), []byte("listen: [")); err == nil {
		t.Error("a document that is not YAML compared")
	}
}

// Without drops top-level keys and keeps the rest, comments included.
func TestWithout(t *testing.T) {
	in := "# the app\nlisten: [tcp://127.0.0.1:8080]\ndrain_timeout: 5s # short\nrestart:\n  listen: kept\n"
	out, err := Without([]byte(in), "listen")
	if err != nil {
		t.Fatal(err)
	}
	if keys, err := Changed([]byte(in), out); err != nil || !slices.Equal(keys, []string{"listen"}) {
		t.Errorf("Without changed %v (%v):\n%s", keys, err, out)
	}
	if !strings.Contains(string(out), "# short") {
		t.Errorf("comments lost:\n%s", out)
	}
	for _, doc := range []string{"", "# nothing\n", "- a list\n"} {
		if out, err := Without([]byte(doc), "listen"); err != nil || string(out) != doc {
			t.Errorf("Without(%q) = %q, %v", doc, out, err)
		}
	}
}
