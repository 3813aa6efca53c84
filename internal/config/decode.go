//go:build linux

package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"

	"github.com/hitless/hitless/internal/control"
	"github.com/hitless/hitless/supervisor"
)

// The decoder walks the yaml.Node tree itself instead of unmarshalling into
// tagged structs, because that is the only way to know the line of every
// value, not only of unknown keys, and to say in each error what would be
// valid. It writes each value straight into the File, the supervisor's
// fields included, through the same parsers and checks as the flags.
type decoder struct {
	file string
	f    *File
	errs []error
}

// errAt records a problem with the value at node n.
func (d *decoder) errAt(n *yaml.Node, field, format string, args ...any) {
	line := 0
	if n != nil {
		line = n.Line
	}
	d.errs = append(d.errs, &Error{File: d.file, Line: line, Field: field, Msg: fmt.Sprintf(format, args...)})
}

// yamlLine matches the position yaml.v3 puts in its syntax errors.
var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// syntaxError converts an error of the YAML parser, moving its line number
// where ours go.
func (d *decoder) syntaxError(err error) {
	msg := err.Error()
	line := 0
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		line, _ = strconv.Atoi(m[1])
		msg = m[2]
	} else {
		msg = strings.TrimPrefix(msg, "yaml: ")
	}
	d.errs = append(d.errs, &Error{File: d.file, Line: line, Msg: "invalid YAML: " + msg})
}

func (d *decoder) document(data []byte) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return // empty, or only comments
		}
		d.syntaxError(err)
		return
	}
	var next yaml.Node
	if err := dec.Decode(&next); !errors.Is(err, io.EOF) {
		if err != nil {
			d.syntaxError(err)
			return
		}
		// A second document would be silently ignored by most readers;
		// refuse it, since someone meant something by it.
		d.errAt(&next, "", "a second YAML document (after ---); a config file holds one")
		return
	}
	root := &doc
	if root.Kind == yaml.DocumentNode {
		if len(root.Content) == 0 {
			return
		}
		root = root.Content[0]
	}
	root = deref(root)
	if isNull(root) {
		return
	}
	if root.Kind != yaml.MappingNode {
		d.errAt(root, "", "the file must be a mapping of keys such as listen:, command:, drain_timeout: (found %s)", kindName(root))
		return
	}
	d.mapping(root, "", func(key string, k, v *yaml.Node) {
		d.topLevel(key, k, v)
	})
}

// topKeys lists the keys of the top level, for the error on an unknown one.
const topKeys = "listen, command, dir, env, user, ready, ready_timeout, drain_signal, drain_timeout, restart, trial, watchdog, watchdog_grace, output_prefix, log, name, control, pid_file, metrics, fdstore"

func (d *decoder) topLevel(key string, k, v *yaml.Node) {
	f := d.f
	switch key {
	case "listen":
		d.listen(v)
	case "command":
		d.command(v)
	case "dir":
		d.str(v, key, &f.Dir)
	case "env":
		d.env(v)
	case "user":
		parsed(d, v, key, supervisor.LookupUser, &f.User)
	case "ready":
		parsed(d, v, key, ParseReady, &f.ReadyDelay)
	case "ready_timeout":
		d.duration(v, key, &f.ReadyTimeout)
	case "drain_signal":
		parsed(d, v, key, ParseSignal, &f.DrainSignal)
	case "drain_timeout":
		d.duration(v, key, &f.DrainTimeout)
	case "restart":
		d.mapping(v, key, func(sub string, k, v *yaml.Node) {
			field := key + "." + sub
			switch sub {
			case "backoff_min":
				d.duration(v, field, &f.BackoffMin)
			case "backoff_max":
				d.duration(v, field, &f.BackoffMax)
			case "stable_after":
				d.duration(v, field, &f.StableAfter)
			default:
				d.unknown(k, field, "backoff_min, backoff_max, stable_after")
			}
		})
	case "trial":
		parsed(d, v, key, ParseOptionalDuration, &f.Trial)
	case "watchdog":
		parsed(d, v, key, ParseOptionalDuration, &f.Watchdog)
	case "watchdog_grace":
		d.duration(v, key, &f.WatchdogGrace)
	case "metrics":
		parsed(d, v, key, ParseMetrics, &f.Metrics)
	case "output_prefix":
		d.boolean(v, key, &f.OutputPrefix)
	case "log":
		d.mapping(v, key, func(sub string, k, v *yaml.Node) {
			field := key + "." + sub
			switch sub {
			case "format":
				parsed(d, v, field, ParseLogFormat, &f.Log.Format)
			case "level":
				parsed(d, v, field, ParseLogLevel, &f.Log.Level)
			default:
				d.unknown(k, field, "format, level")
			}
		})
	case "name":
		parsed(d, v, key, Checked(control.CheckName), &f.Name)
	case "control":
		parsed(d, v, key, Checked(checkSocketPath), &f.Control)
	case "pid_file":
		d.str(v, key, &f.PIDFile)
	case "fdstore":
		d.boolean(v, key, &f.FDStore)
	default:
		d.unknown(k, key, topKeys)
	}
}

func (d *decoder) unknown(k *yaml.Node, field, valid string) {
	d.errAt(k, field, "unknown key (valid keys here: %s)", valid)
}

// mapping calls fn for each key of the mapping n, in order, after checking
// that keys are plain strings and not repeated. A null value counts as an
// empty mapping, so that a section whose entries are all commented out is
// valid.
func (d *decoder) mapping(n *yaml.Node, field string, fn func(key string, k, v *yaml.Node)) {
	n = deref(n)
	if isNull(n) {
		return
	}
	if n.Kind != yaml.MappingNode {
		d.errAt(n, field, "want a mapping of keys to values, found %s", kindName(n))
		return
	}
	seen := make(map[string]int)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := deref(n.Content[i]), n.Content[i+1]
		if k.Kind != yaml.ScalarNode || k.Tag == "!!merge" {
			if k.Tag == "!!merge" {
				d.errAt(k, field, "merge keys (<<) are not supported; write the keys out")
			} else {
				d.errAt(k, field, "want a plain key, found %s", kindName(k))
			}
			continue
		}
		key := k.Value
		sub := key
		if field != "" {
			sub = field + "." + key
		}
		if prev, dup := seen[key]; dup {
			d.errAt(k, sub, "set twice (first on line %d)", prev)
			continue
		}
		seen[key] = k.Line
		d.f.lines[sub] = k.Line
		fn(key, k, v)
	}
}

// sequence calls fn for each item of the sequence n. A null value counts as
// an empty sequence.
func (d *decoder) sequence(n *yaml.Node, field, want string, fn func(i int, item *yaml.Node)) {
	n = deref(n)
	if isNull(n) {
		return
	}
	if n.Kind != yaml.SequenceNode {
		d.errAt(n, field, "want a list, found %s (%s)", kindName(n), want)
		return
	}
	for i, item := range n.Content {
		d.f.lines[fmt.Sprintf("%s[%d]", field, i)] = item.Line
		fn(i, deref(item))
	}
}

// text returns the text of a scalar, accepting strings and also numbers,
// because "8080" in an argv or "2024" as a name is meant as text. It
// refuses null (a key with nothing after it is usually a mistake),
// booleans (true was probably not meant as the text "true"), and other
// tags such as !!binary.
func (d *decoder) text(n *yaml.Node, field string) (string, bool) {
	n = deref(n)
	if n.Kind != yaml.ScalarNode {
		d.errAt(n, field, "want a single value, found %s", kindName(n))
		return "", false
	}
	switch n.Tag {
	case "!!str", "!!int", "!!float":
	case "!!null":
		d.errAt(n, field, "has no value (give one, or remove the key)")
		return "", false
	case "!!bool":
		d.errAt(n, field, "%s is a boolean; quote it if you mean the text", n.Value)
		return "", false
	default:
		d.errAt(n, field, "values with the tag %s are not supported", n.Tag)
		return "", false
	}
	if strings.IndexByte(n.Value, 0) >= 0 {
		d.errAt(n, field, "contains a NUL byte")
		return "", false
	}
	return n.Value, true
}

// str stores a non-empty text value in *dst.
func (d *decoder) str(n *yaml.Node, field string, dst *string) bool {
	s, ok := d.text(n, field)
	if !ok {
		return false
	}
	if s == "" {
		d.errAt(n, field, "is empty (give a value, or remove the key)")
		return false
	}
	*dst = s
	return true
}

func (d *decoder) duration(n *yaml.Node, field string, dst *time.Duration) {
	parsed(d, n, field, ParseDuration, dst)
}

// parsed stores in *dst the text value of n as parse reads it: the parser
// a flag of the same setting uses, so that both say the same.
func parsed[T any](d *decoder, n *yaml.Node, field string, parse func(string) (T, error), dst *T) {
	var s string
	if !d.str(n, field, &s) {
		return
	}
	v, err := parse(s)
	if err != nil {
		d.errAt(n, field, "%v", err)
		return
	}
	*dst = v
}

func (d *decoder) boolean(n *yaml.Node, field string, dst *bool) bool {
	n = deref(n)
	if n.Kind != yaml.ScalarNode || n.Tag != "!!bool" {
		d.errAt(n, field, "%s is not a boolean (want true or false)", describe(n))
		return false
	}
	*dst = n.Value == "true" || n.Value == "True" || n.Value == "TRUE"
	return true
}

const commandWant = `want the program and its arguments, e.g. ["/usr/local/bin/app", "--port", "8080"]; hitless runs no shell`

func (d *decoder) command(n *yaml.Node) {
	var argv []string
	ok := true
	d.sequence(n, "command", commandWant, func(i int, item *yaml.Node) {
		field := fmt.Sprintf("command[%d]", i)
		s, good := d.text(item, field)
		if !good {
			ok = false
			return
		}
		if i == 0 && s == "" {
			d.errAt(item, field, "the program is empty (%s)", commandWant)
			ok = false
			return
		}
		argv = append(argv, s)
	})
	if n := deref(n); ok && n.Kind == yaml.SequenceNode && len(n.Content) == 0 {
		d.errAt(n, "command", "is empty (%s)", commandWant)
		return
	}
	if ok {
		d.f.Command = argv
	}
}

// env reads the mapping of variables into Env as "KEY=VALUE", in the
// order of the file, each checked as the supervisor checks it.
func (d *decoder) env(n *yaml.Node) {
	var env []string
	d.mapping(n, "env", func(key string, k, v *yaml.Node) {
		field := "env." + key
		if strings.Contains(key, "=") {
			// KEY=VALUE would read it as a shorter name with a longer value.
			d.errAt(k, field, "%q contains '=', which ends a variable's name", key)
			return
		}
		if err := supervisor.CheckEnv(key + "="); err != nil {
			d.errAt(k, field, "%v", err)
			return
		}
		v = deref(v)
		if v.Kind == yaml.ScalarNode && v.Tag == "!!null" {
			d.errAt(v, field, `has no value (write "" for an empty variable)`)
			return
		}
		if v.Kind == yaml.ScalarNode && v.Tag == "!!bool" {
			// DEBUG: true means the text the user typed; unlike elsewhere,
			// there is no other meaning it could have.
			env = append(env, key+"="+v.Value)
			return
		}
		if s, ok := d.text(v, field); ok {
			env = append(env, key+"="+s)
		}
	})
	d.f.Env = env
}

const listenWant = `want "[NAME=]URL" such as "http=tcp://127.0.0.1:8080" or "systemd://web", or a mapping {name, url, backlog, mode, owner, group}`

// listen reads the sockets into Listen, each parsed and checked as the
// --listen flag is, so that a bad one is reported with its line.
func (d *decoder) listen(n *yaml.Node) {
	var out []supervisor.ListenSpec
	d.sequence(n, "listen", listenWant, func(i int, item *yaml.Node) {
		field := fmt.Sprintf("listen[%d]", i)
		if item.Kind == yaml.MappingNode {
			if spec, ok := d.listenMapping(item, field); ok {
				out = append(out, spec)
			}
			return
		}
		s, ok := d.text(item, field)
		if !ok {
			return
		}
		if s == "" {
			d.errAt(item, field, "is empty (%s)", listenWant)
			return
		}
		spec, err := supervisor.ParseListen(s)
		if err != nil {
			d.errAt(item, field, "%v", err)
			return
		}
		out = append(out, spec)
	})
	d.f.Listen = out
}

// listenMapping reads the mapping form of a listen item: the url as
// supervisor.ParseListen takes it, then the name and each option as the
// url's NAME= and query would set them. An option may be given in one
// place only, the url or the mapping.
func (d *decoder) listenMapping(n *yaml.Node, field string) (supervisor.ListenSpec, bool) {
	type option struct {
		key, value string
		node       *yaml.Node
	}
	var (
		name, rawURL      string
		nameNode, urlNode *yaml.Node
		opts              []option
		ok                = true
	)
	d.mapping(n, field, func(key string, k, v *yaml.Node) {
		sub := field + "." + key
		var s string
		switch key {
		case "name":
			nameNode = v
			ok = d.str(v, sub, &name) && ok
		case "url":
			urlNode = v
			ok = d.str(v, sub, &rawURL) && ok
		case "backlog", "mode", "owner", "group":
			// The raw text, not YAML's reading of it: YAML 1.2 reads
			// mode 0660 as decimal 660, yaml.v3 as octal; SetOption
			// reads it as the url's query would give it.
			if d.str(v, sub, &s) {
				opts = append(opts, option{key, s, v})
			} else {
				ok = false
			}
		case "nonblock":
			var b bool
			if d.boolean(v, sub, &b) {
				opts = append(opts, option{key, strconv.FormatBool(b), v})
			} else {
				ok = false
			}
		default:
			d.unknown(k, sub, "name, url, backlog, nonblock, mode, owner, group")
			ok = false
		}
	})
	if !ok {
		return supervisor.ListenSpec{}, false
	}
	if rawURL == "" {
		d.errAt(n, field, "has no url (%s)", listenWant)
		return supervisor.ListenSpec{}, false
	}
	spec, err := supervisor.ParseListen(rawURL)
	if err != nil {
		d.errAt(urlNode, field+".url", "%v", err)
		return supervisor.ListenSpec{}, false
	}
	u, err := url.Parse(rawURL)
	if err != nil || u.Scheme == "" {
		// ParseListen took it, so it is NAME=URL: the name has a key here.
		d.errAt(urlNode, field+".url", "%q starts with NAME=; give the name as name:", rawURL)
		return supervisor.ListenSpec{}, false
	}
	if nameNode != nil {
		if err := supervisor.CheckSocketName(name); err != nil {
			d.errAt(nameNode, field+".name", "%v", err)
			return supervisor.ListenSpec{}, false
		}
		spec.Name = name
	}
	inURL := u.Query()
	for _, o := range opts {
		sub := field + "." + o.key
		if inURL.Has(o.key) {
			d.errAt(o.node, sub, "is also set in the url %q; set it in one place", rawURL)
			return supervisor.ListenSpec{}, false
		}
		if err := spec.SetOption(o.key, o.value); err != nil {
			d.errAt(o.node, sub, "%v", err)
			return supervisor.ListenSpec{}, false
		}
	}
	// Spec is what messages show: the url alone would hide the name and
	// the options; String() then gives NAME=URL.
	spec.Spec = ""
	return spec, true
}

// deref follows an alias to the node it stands for, keeping the alias's
// position so that errors point where the value is used.
func deref(n *yaml.Node) *yaml.Node {
	if n == nil || n.Kind != yaml.AliasNode || n.Alias == nil {
		return n
	}
	target := *n.Alias
	for target.Kind == yaml.AliasNode && target.Alias != nil {
		target = *target.Alias
	}
	target.Line, target.Column = n.Line, n.Column
	return &target
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.Tag == "!!null"
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return describe(n)
	}
	return "an unexpected node"
}

// describe quotes a scalar for an error message, shortened so that a long
// value does not drown the message, and made printable.
func describe(n *yaml.Node) string {
	if n.Kind != yaml.ScalarNode {
		return kindName(n)
	}
	if n.Tag == "!!null" {
		return "no value"
	}
	s := n.Value
	if len(s) > 40 {
		cut := 40
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "..."
	}
	return strconv.Quote(s)
}
