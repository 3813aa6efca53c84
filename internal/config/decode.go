//go:build linux

package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"

	"github.com/hitless/hitless/supervisor/sockets"
)

// The decoder walks the yaml.Node tree itself instead of unmarshalling into
// tagged structs, because that is the only way to know the line of every
// value, not only of unknown keys, and to say in each error what would be
// valid. It writes each value straight into the File, the supervisor's
// fields included, through the same parsers and checks as the flags.
type decoder struct {
	file     string
	f        *File
	settings []Setting // of f
	errs     []error
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
	d.section(root, "")
}

// section reads the mapping n, which holds the keys under section ("" for
// the top level, "restart" for restart's), into the settings they name.
func (d *decoder) section(n *yaml.Node, section string) {
	d.mapping(n, section, func(key string, k, v *yaml.Node) {
		if section != "" {
			key = section + "." + key
		}
		if i := slices.IndexFunc(d.settings, func(s Setting) bool { return s.Key == key }); i >= 0 {
			d.settings[i].Value.decode(d, v, key)
		} else if len(keys(d.settings, key)) > 0 {
			d.section(v, key)
		} else {
			d.unknown(k, key, strings.Join(keys(d.settings, section), ", "))
		}
	})
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

// str returns a non-empty text value.
func (d *decoder) str(n *yaml.Node, field string) (string, bool) {
	s, ok := d.text(n, field)
	if ok && s == "" {
		d.errAt(n, field, "is empty (give a value, or remove the key)")
		return "", false
	}
	return s, ok
}

// boolean returns a boolean value as "true" or "false".
func (d *decoder) boolean(n *yaml.Node, field string) (string, bool) {
	n = deref(n)
	b, err := strconv.ParseBool(n.Value)
	if n.Kind != yaml.ScalarNode || n.Tag != "!!bool" || err != nil {
		d.errAt(n, field, "%s is not a boolean (want true or false)", describe(n))
		return "", false
	}
	return strconv.FormatBool(b), true
}

const commandWant = `want the program and its arguments, e.g. ["/usr/local/bin/app", "--port", "8080"]; hitless runs no shell`

// command reads the program and its arguments; it has no flag, hence no
// parser.
func (d *decoder) command(n *yaml.Node, key string, _ func(string) (string, error)) []string {
	var argv []string
	ok := true
	d.sequence(n, key, commandWant, func(i int, item *yaml.Node) {
		field := fmt.Sprintf("%s[%d]", key, i)
		s, good := d.text(item, field)
		if good && i == 0 && s == "" {
			d.errAt(item, field, "the program is empty (%s)", commandWant)
			good = false
		}
		ok = ok && good
		argv = append(argv, s)
	})
	if n := deref(n); ok && n.Kind == yaml.SequenceNode && len(n.Content) == 0 {
		d.errAt(n, key, "is empty (%s)", commandWant)
	}
	return argv
}

// env reads the mapping of variables as "KEY=VALUE", in the order of the
// file, each name checked by parse as the flag's KEY=VALUE is.
func (d *decoder) env(n *yaml.Node, key string, parse func(string) (string, error)) []string {
	var env []string
	d.mapping(n, key, func(name string, k, v *yaml.Node) {
		field := key + "." + name
		if strings.Contains(name, "=") {
			// KEY=VALUE would read it as a shorter name with a longer value.
			d.errAt(k, field, "%q contains '=', which ends a variable's name", name)
			return
		}
		if _, err := parse(name + "="); err != nil {
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
			env = append(env, name+"="+v.Value)
			return
		}
		if s, ok := d.text(v, field); ok {
			env = append(env, name+"="+s)
		}
	})
	return env
}

const listenWant = `want "[NAME=]URL" such as "http=tcp://127.0.0.1:8080" or "systemd://web", or a mapping {name, url, backlog, mode, owner, group}`

// listen reads the sockets, each parsed by parse as the --listen flag's
// text is, so that a bad one is reported with its line.
func (d *decoder) listen(n *yaml.Node, key string, parse func(string) (sockets.ListenSpec, error)) []sockets.ListenSpec {
	var out []sockets.ListenSpec
	d.sequence(n, key, listenWant, func(i int, item *yaml.Node) {
		field := fmt.Sprintf("%s[%d]", key, i)
		if item.Kind == yaml.MappingNode {
			if spec, ok := d.listenMapping(item, field, parse); ok {
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
		spec, err := parse(s)
		if err != nil {
			d.errAt(item, field, "%v", err)
			return
		}
		out = append(out, spec)
	})
	return out
}

// listenMapping reads the mapping form of a listen item: the url as parse
// takes it, then the name and each option as the url's NAME= and query
// would set them. An option may be given in one place only, the url or
// the mapping.
func (d *decoder) listenMapping(n *yaml.Node, field string, parse func(string) (sockets.ListenSpec, error)) (sockets.ListenSpec, bool) {
	given, ok := d.listenEntries(n, field)
	fail := func(e listenEntry, format string, args ...any) (sockets.ListenSpec, bool) {
		d.errAt(e.node, field+"."+e.key, format, args...)
		return sockets.ListenSpec{}, false
	}
	at := func(key string) int { return slices.IndexFunc(given, func(e listenEntry) bool { return e.key == key }) }
	i := at("url")
	if ok && i < 0 {
		d.errAt(n, field, "has no url (%s)", listenWant)
	}
	if !ok || i < 0 {
		return sockets.ListenSpec{}, false
	}
	raw := given[i]
	spec, err := parse(raw.text)
	u, uerr := url.Parse(raw.text)
	switch {
	case err != nil:
		return fail(raw, "%v", err)
	case uerr != nil || u.Scheme == "":
		// parse took it, so it is NAME=URL: the name has a key here.
		return fail(raw, "%q starts with NAME=; give the name as name:", raw.text)
	}
	if i := at("name"); i >= 0 {
		if err := sockets.CheckName(given[i].text); err != nil {
			return fail(given[i], "%v", err)
		}
		spec.Name = given[i].text
	}
	for _, e := range given {
		switch {
		case e.key == "url" || e.key == "name":
		case u.Query().Has(e.key):
			return fail(e, "is also set in the url %q; set it in one place", raw.text)
		default:
			if err := spec.SetOption(e.key, e.text); err != nil {
				return fail(e, "%v", err)
			}
		}
	}
	// Spec is what messages show: the url alone would hide the name and
	// the options; String() then gives NAME=URL.
	spec.Spec = ""
	return spec, true
}

// A listenEntry is a key of a listen item's mapping, with its text.
type listenEntry struct {
	key, text string
	node      *yaml.Node
}

func (d *decoder) listenEntries(n *yaml.Node, field string) ([]listenEntry, bool) {
	var given []listenEntry
	ok := true
	d.mapping(n, field, func(key string, k, v *yaml.Node) {
		sub := field + "." + key
		var s string
		good := false
		switch key {
		case "name", "url", "backlog", "mode", "owner", "group":
			// The raw text, not YAML's reading of it: YAML 1.2 reads
			// mode 0660 as decimal 660, yaml.v3 as octal; SetOption
			// reads it as the url's query would give it.
			s, good = d.str(v, sub)
		case "nonblock":
			s, good = d.boolean(v, sub)
		default:
			d.unknown(k, sub, "name, url, backlog, nonblock, mode, owner, group")
		}
		ok = ok && good
		given = append(given, listenEntry{key, s, v})
	})
	return given, ok
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
