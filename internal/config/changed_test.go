//go:build linux

package config

import (
	"slices"
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
