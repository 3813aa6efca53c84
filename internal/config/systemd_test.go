//go:build linux

package config

import (
	"strings"
	"testing"
)

// Sockets systemd passes, in both forms of a listen item, and the fd store.
func TestParseSystemd(t *testing.T) {
	f, err := Parse("t.yaml", []byte(`
fdstore: true
listen:
  - systemd://web
  - {name: api, url: "systemd://api.socket"}
  - http=systemd://web2
`))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, l := range f.Listen {
		got = append(got, l.Name+"<"+l.Systemd+">"+l.String())
	}
	if want := "web<web>systemd://web api<api.socket>api=systemd://api.socket http<web2>http=systemd://web2"; strings.Join(got, " ") != want || !f.FDStore {
		t.Errorf("listen %q, fdstore %v; want %q, true", got, f.FDStore, want)
	}
	for doc, want := range map[string]string{
		"listen:\n  - {url: systemd://web, backlog: 5}\n": `t.yaml:2: listen[0].backlog: backlog="5": a socket systemd passes takes no options`,
		"listen:\n  - systemd://a:b\n":                    `t.yaml:2: listen[0]: "systemd://a:b": want systemd://NAME`,
		"fdstore: 1\n":                                    `t.yaml:1: fdstore: "1" is not a boolean (want true or false)`,
	} {
		if _, err := Parse("t.yaml", []byte(doc)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Parse(%q) = %v, want %q", doc, err, want)
		}
	}
}
