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

	"gopkg.in/yaml.v3"
)

// The decoder walks the yaml.Node tree itself instead of unmarshalling into
// tagged structs, because that is the only way to know the line of every
// value, not only of unknown keys, and to say in each error what would be
// valid.
type decoder struct {
	file     string
	f        *File
	useLines bool // add() looks up the line of the field in f.lines
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

// add records a problem with a field as a whole.
func (d *decoder) add(field, format string, args ...any) {
	line := 0
	if d.useLines {
		line = d.f.Line(field)
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
	d.useLines = true
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
const topKeys = "listen, command, dir, env, ready, ready_timeout, drain_signal, drain_timeout, restart, output_prefix, log, name, control, pid_file"

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
	case "ready":
		var s string
		if d.str(v, key, &s) {
			m, err := ParseReady(s)
			if err != nil {
				d.errAt(v, key, "%v", err)
			} else {
				f.Ready = m
			}
		}
	case "ready_timeout":
		d.duration(v, key, &f.ReadyTimeout)
	case "drain_signal":
		var s string
		if d.str(v, key, &s) {
			sig, err := ParseSignal(s)
			if err != nil {
				d.errAt(v, key, "%v", err)
			} else {
				f.DrainSignal = sig
			}
		}
	case "drain_timeout":
		d.duration(v, key, &f.DrainTimeout)
	case "restart":
		d.mapping(v, key, func(sub string, k, v *yaml.Node) {
			field := key + "." + sub
			switch sub {
			case "backoff_min":
				d.duration(v, field, &f.Restart.BackoffMin)
			case "backoff_max":
				d.duration(v, field, &f.Restart.BackoffMax)
			case "stable_after":
				d.duration(v, field, &f.Restart.StableAfter)
			default:
				d.unknown(k, field, "backoff_min, backoff_max, stable_after")
			}
		})
	case "output_prefix":
		d.boolean(v, key, &f.OutputPrefix)
	case "log":
		d.mapping(v, key, func(sub string, k, v *yaml.Node) {
			field := key + "." + sub
			var s string
			switch sub {
			case "format":
				if d.str(v, field, &s) {
					if format, err := ParseLogFormat(s); err != nil {
						d.errAt(v, field, "%v", err)
					} else {
						f.Log.Format = format
					}
				}
			case "level":
				if d.str(v, field, &s) {
					if level, err := ParseLogLevel(s); err != nil {
						d.errAt(v, field, "%v", err)
					} else {
						f.Log.Level = level
					}
				}
			default:
				d.unknown(k, field, "format, level")
			}
		})
	case "name":
		if d.str(v, key, &f.Name) && !validName.MatchString(f.Name) {
			d.errAt(v, key, "%q is not a service name (want letters, digits, and . _ @ - , starting with a letter or digit, at most 64 characters)", f.Name)
		}
	case "control":
		d.str(v, key, &f.Control)
	case "pid_file":
		d.str(v, key, &f.PIDFile)
	default:
		d.unknown(k, key, topKeys)
	}
}

// validName is what a service name may look like. It ends up in a file
// name and in log lines, so it is kept to characters that need no quoting.
var validName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$`)

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
		if d.useLines {
			d.f.lines[sub] = k.Line
		}
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
		if d.useLines {
			d.f.lines[fmt.Sprintf("%s[%d]", field, i)] = item.Line
		}
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
	var s string
	if !d.str(n, field, &s) {
		return
	}
	v, err := ParseDuration(s)
	if err != nil {
		d.errAt(n, field, "%v", err)
		return
	}
	*dst = v
}

func (d *decoder) boolean(n *yaml.Node, field string, dst *bool) {
	n = deref(n)
	if n.Kind != yaml.ScalarNode || n.Tag != "!!bool" {
		d.errAt(n, field, "%s is not a boolean (want true or false)", describe(n))
		return
	}
	*dst = n.Value == "true" || n.Value == "True" || n.Value == "TRUE"
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

// validEnvName is what a variable name may look like: what POSIX shells
// accept, which is also what every program can read back.
var validEnvName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// reservedEnv reports whether hitless sets the variable itself for each
// child, so that a value from the file would be overwritten or, worse,
// break the hand-over of sockets or readiness.
func reservedEnv(name string) bool {
	switch name {
	case "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "EINHORN_FDS", "EINHORN_FD_COUNT":
		return true
	}
	return strings.HasPrefix(name, "LISTEN_") ||
		strings.HasPrefix(name, "SERVER_STARTER_") ||
		strings.HasPrefix(name, "EINHORN_FD_")
}

func (d *decoder) env(n *yaml.Node) {
	env := make(map[string]string)
	d.mapping(n, "env", func(key string, k, v *yaml.Node) {
		field := "env." + key
		if !validEnvName.MatchString(key) {
			d.errAt(k, field, "%q is not a variable name (want letters, digits and _, not starting with a digit)", key)
			return
		}
		if reservedEnv(key) {
			d.errAt(k, field, "hitless sets %s for each child itself; it cannot be configured", key)
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
			env[key] = v.Value
			return
		}
		if s, ok := d.text(v, field); ok {
			env[key] = s
		}
	})
	if len(env) > 0 {
		d.f.Env = env
	}
}

const listenWant = `want "[NAME=]URL" such as "http=tcp://127.0.0.1:8080", or a mapping {name, url, backlog, mode, owner, group}`

func (d *decoder) listen(n *yaml.Node) {
	var out []string
	d.sequence(n, "listen", listenWant, func(i int, item *yaml.Node) {
		field := fmt.Sprintf("listen[%d]", i)
		if item.Kind == yaml.MappingNode {
			if s, ok := d.listenMapping(item, field); ok {
				out = append(out, s)
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
		out = append(out, s)
	})
	d.f.Listen = out
}

// validListenName is what a socket name may look like: LISTEN_FDNAMES
// allows printable ASCII without ":", and the flag syntax "NAME=URL" also
// rules out "=". Spaces are excluded to keep names unquoted in logs.
var validListenName = regexp.MustCompile(`^[!-9;<>-~]{1,255}$`)

// validMode is a permission mode in octal, as chmod takes it.
var validMode = regexp.MustCompile(`^(0o|0)?[0-7]{1,4}$`)

// listenMapping converts the mapping form of a listen item to flag syntax.
func (d *decoder) listenMapping(n *yaml.Node, field string) (string, bool) {
	var name, rawURL string
	opts := url.Values{}
	ok := true
	d.mapping(n, field, func(key string, k, v *yaml.Node) {
		sub := field + "." + key
		var s string
		switch key {
		case "name":
			if !d.str(v, sub, &name) {
				ok = false
			} else if !validListenName.MatchString(name) {
				d.errAt(v, sub, "%q is not a socket name (want up to 255 printable ASCII characters without spaces, ':' or '=')", name)
				ok = false
			}
		case "url":
			if !d.str(v, sub, &rawURL) {
				ok = false
			}
		case "backlog":
			v = deref(v)
			b, err := strconv.Atoi(v.Value)
			if v.Kind != yaml.ScalarNode || v.Tag != "!!int" || err != nil || b <= 0 {
				d.errAt(v, sub, "%s is not a positive integer (want e.g. 1024)", describe(v))
				ok = false
				return
			}
			opts.Set(key, strconv.Itoa(b))
		case "mode":
			// The raw text is used, not YAML's reading of it: YAML 1.2
			// reads 0660 as decimal 660, yaml.v3 as octal; neither
			// ambiguity matters if we parse it ourselves.
			if !d.str(v, sub, &s) {
				ok = false
			} else if !validMode.MatchString(s) {
				d.errAt(v, sub, "%q is not a permission mode (want octal, as for chmod, e.g. 0660)", s)
				ok = false
			} else {
				m, _ := strconv.ParseUint(strings.TrimPrefix(strings.TrimPrefix(s, "0o"), "0"), 8, 32)
				opts.Set(key, fmt.Sprintf("%04o", m))
			}
		case "owner", "group":
			if !d.str(v, sub, &s) {
				ok = false
			} else {
				opts.Set(key, s)
			}
		default:
			d.unknown(k, sub, "name, url, backlog, mode, owner, group")
			ok = false
		}
	})
	if !ok {
		return "", false
	}
	if rawURL == "" {
		d.errAt(n, field, "has no url (%s)", listenWant)
		return "", false
	}
	unixURL := strings.HasPrefix(rawURL, "unix:")
	for _, key := range []string{"mode", "owner", "group"} {
		if opts.Has(key) && !unixURL {
			d.errAt(n, field+"."+key, "only applies to unix:// sockets, not %q", rawURL)
			return "", false
		}
	}
	s := rawURL
	if len(opts) > 0 {
		if u, err := url.Parse(rawURL); err == nil {
			q := u.Query()
			for key := range opts {
				if q.Has(key) {
					d.errAt(n, field+"."+key, "is also set in the url %q; set it in one place", rawURL)
					return "", false
				}
			}
		}
		sep := "?"
		if strings.Contains(rawURL, "?") {
			sep = "&"
		}
		s += sep + opts.Encode()
	}
	if name != "" {
		s = name + "=" + s
	}
	return s, true
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
