//go:build linux

package config

import (
	"reflect"
	"slices"
	"testing"
)

// every sets every key of the file to a value other than its default.
const every = `
listen:
  - http=tcp://127.0.0.1:8080?backlog=5
  - unix:///run/a.sock?mode=0600
command: [./server, -x]
dir: /srv
env: {A: "1", B: two}
user: root
ready: delay:2s
ready_timeout: 9s
drain_signal: USR2
drain_timeout: 8s
restart: {backoff_min: 1s, backoff_max: 7s, stable_after: 6s}
trial: 5s
watchdog: 4s
watchdog_grace: 3s
output_prefix: true
no_standby: true
log: {format: json, level: debug}
name: app
control: /run/app.sock
pid_file: /run/app.pid
metrics: 127.0.0.1:9180
fdstore: true
`

// The table: one flag and one key per setting, each key read into the
// supervisor's field the table names, and each value's text read back the
// same by its flag.
func TestSettings(t *testing.T) {
	file, err := Parse("t.yaml", []byte(every))
	if err != nil {
		t.Fatal(err)
	}
	flags := Default()
	var seen []string
	for i, s := range Settings(file) {
		if slices.Contains(seen, s.Key) || s.Flag != "" && slices.Contains(seen, "--"+s.Flag) {
			t.Errorf("%s (--%s) twice", s.Key, s.Flag)
		}
		seen = append(seen, s.Key, "--"+s.Flag)
		if s.Field != "" {
			got, def := reflect.ValueOf(file.Config).FieldByName(s.Field), reflect.ValueOf(Default().Config).FieldByName(s.Field)
			if !got.IsValid() || reflect.DeepEqual(got.Interface(), def.Interface()) {
				t.Errorf("%s sets no field %s of supervisor.Config", s.Key, s.Field)
			}
			if l, index, ok := file.Lookup(s.Field); !ok || l.Key != s.Key || index != -1 {
				t.Errorf("Lookup(%s) = %s, %d, %v", s.Field, l.Key, index, ok)
			}
		}
		if s.Flag == "" {
			continue
		}
		texts := s.Value.Items()
		if texts == nil {
			texts = []string{s.Value.String()}
		}
		for _, text := range texts {
			if err := Settings(flags)[i].Value.Set(text); err != nil {
				t.Errorf("--%s %s: %v", s.Flag, text, err)
			}
		}
	}
	// Every setting but the command, which has no flag, is as the file says.
	if d := Differ(file, flags); !reflect.DeepEqual(d, []string{"command"}) {
		t.Errorf("the flags, given the file's values as text, differ from it in %q; want only command", d)
	}
}

// A field the supervisor refused, as its *ConfigError names it, is the
// key of the file that set it.
func TestLookupItems(t *testing.T) {
	file, err := Parse("t.yaml", []byte(every))
	if err != nil {
		t.Fatal(err)
	}
	for field, key := range map[string]string{
		"Listen[1]": "listen[1]", "Env[1]": "env.B", "Env[5]": "env", "DrainTimeout": "drain_timeout",
		"BackoffMax": "restart.backoff_max", "Stdout": "Stdout",
	} {
		if got, _ := file.key(field); got != key {
			t.Errorf("key(%s) = %s, want %s", field, got, key)
		}
	}
	s, i, ok := file.Lookup("Listen[1]")
	if items := s.Value.Items(); !ok || i != 1 || len(items) != 2 || items[1] != "unix:///run/a.sock?mode=0600" {
		t.Errorf("Lookup(Listen[1]) = %v, %d, %v", items, i, ok)
	}
}

// Flags laid over a file replace its values, but add to its variables.
func TestLayDiffer(t *testing.T) {
	file, err := Parse("t.yaml", []byte(every))
	if err != nil {
		t.Fatal(err)
	}
	before, _ := Parse("t.yaml", []byte(every))
	flags := Default()
	flags.Env, flags.DrainTimeout = []string{"B=2", "C=3"}, 2*file.DrainTimeout
	file.Lay(flags, func(s Setting) bool { return s.Key == "env" || s.Key == "drain_timeout" || s.Key == "listen" })
	if want := []string{"A=1", "B=2", "C=3"}; !reflect.DeepEqual(file.Env, want) || file.DrainTimeout != flags.DrainTimeout || len(file.Listen) != 0 {
		t.Errorf("env %q (want %q), drain timeout %v, listen %v", file.Env, want, file.DrainTimeout, file.Listen)
	}
	if d := Differ(before, file); !reflect.DeepEqual(d, []string{"listen", "env", "drain_timeout"}) {
		t.Errorf("Differ = %q", d)
	}
	if d := Differ(Default(), Default()); d != nil {
		t.Errorf("Differ of two defaults = %q", d)
	}
}
