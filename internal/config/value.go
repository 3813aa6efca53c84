//go:build linux

package config

import (
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// A Value is a setting's value in one File. As a flag (a pflag.Value) it
// parses the flag's text, each use of a repeatable flag adding an item;
// the decoder reads the file's YAML into it with the same parser.
type Value interface {
	Set(text string) error
	String() string  // the text Set takes, for the default in --help; "" for no items
	Type() string    // the argument's name in --help
	Items() []string // a list's items, each as Set takes it; nil for one value

	decode(d *decoder, n *yaml.Node, key string)
	lay(from Value) // from is the same setting's value in another File
	equal(other Value) bool
	empty() bool
	itemKey(key string, i int) string // the key of item i, key itself for i < 0
}

// value is a setting of one value: a flag given once, a scalar in the file.
type value[T any] struct {
	p      *T
	parse  func(string) (T, error)
	format func(T) string // the inverse of parse
	typ    string         // "bool": the flag needs no argument, and the file wants true or false
}

func (v *value[T]) Set(s string) error {
	x, err := v.parse(s)
	if err != nil {
		return err
	}
	*v.p = x
	return nil
}

func (v *value[T]) String() string { return v.format(*v.p) }
func (v *value[T]) Type() string   { return v.typ }

func (v *value[T]) decode(d *decoder, n *yaml.Node, key string) {
	read := d.str
	if v.typ == "bool" {
		read = d.boolean
	}
	text, ok := read(n, key)
	if !ok {
		return
	}
	if err := v.Set(text); err != nil {
		d.errAt(n, key, "%v", err)
	}
}

func (v *value[T]) lay(from Value)                   { *v.p = *from.(*value[T]).p }
func (v *value[T]) equal(other Value) bool           { return reflect.DeepEqual(*v.p, *other.(*value[T]).p) }
func (v *value[T]) empty() bool                      { return reflect.ValueOf(v.p).Elem().IsZero() }
func (v *value[T]) Items() []string                  { return nil }
func (v *value[T]) itemKey(key string, _ int) string { return key }

func parsed[T any](p *T, parse func(string) (T, error), format func(T) string) *value[T] {
	return &value[T]{p, parse, format, "string"}
}

// text is a setting of text that parse (nil: none) accepts.
func text(p *string, parse func(string) (string, error)) *value[string] {
	if parse == nil {
		parse = Checked(nil)
	}
	return parsed(p, parse, same)
}

// Duration is a duration as ParseDuration takes it: positive, with a
// unit. It is also the value of the --timeout flags of the commands that
// talk to hitless run.
func Duration(p *time.Duration) Value {
	return &value[time.Duration]{p, ParseDuration, time.Duration.String, "duration"}
}

// optionalDuration is a duration that may also be 0, for none.
func optionalDuration(p *time.Duration) *value[time.Duration] {
	return &value[time.Duration]{p, ParseOptionalDuration, FormatOptionalDuration, "duration"}
}

func boolean(p *bool) *value[bool] {
	return &value[bool]{p, strconv.ParseBool, strconv.FormatBool, "bool"}
}

func same(s string) string { return s }

// list is a setting of several items: a repeatable flag, a list or a
// mapping in the file.
type list[T any] struct {
	p      *[]T
	parse  func(string) (T, error) // one item; nil for no flag
	format func(T) string
	// read decodes the file's form: a list (listen, command) or a
	// mapping (env), each item through parse.
	read func(d *decoder, n *yaml.Node, key string, parse func(string) (T, error)) []T
	// name, if set, names each item (env): flags add to the file's
	// items, replacing one of the same name, and item i's key is
	// KEY.NAME. Otherwise flags replace the file's items, and item i's key
	// is KEY[i].
	name func(T) string
}

func (l *list[T]) Set(s string) error {
	x, err := l.parse(s)
	if err != nil {
		return err
	}
	*l.p = append(*l.p, x)
	return nil
}

// String is empty for no items, so that --help shows no default.
func (l *list[T]) String() string {
	if len(*l.p) == 0 {
		return ""
	}
	return "[" + strings.Join(l.Items(), ",") + "]"
}

func (l *list[T]) Type() string { return "stringArray" }

func (l *list[T]) decode(d *decoder, n *yaml.Node, key string) { *l.p = l.read(d, n, key, l.parse) }

func (l *list[T]) lay(from Value) {
	items := *from.(*list[T]).p
	if l.name == nil {
		*l.p = items
		return
	}
	for _, x := range items {
		if i := slices.IndexFunc(*l.p, func(y T) bool { return l.name(y) == l.name(x) }); i >= 0 {
			(*l.p)[i] = x
		} else {
			*l.p = append(*l.p, x)
		}
	}
}

func (l *list[T]) equal(other Value) bool { return reflect.DeepEqual(*l.p, *other.(*list[T]).p) }

func (l *list[T]) empty() bool { return len(*l.p) == 0 }

func (l *list[T]) Items() []string {
	s := make([]string, len(*l.p))
	for i, x := range *l.p {
		s[i] = l.format(x)
	}
	return s
}

func (l *list[T]) itemKey(key string, i int) string {
	switch {
	case i < 0:
		return key
	case l.name == nil:
		return fmt.Sprintf("%s[%d]", key, i)
	case i < len(*l.p):
		return key + "." + l.name((*l.p)[i])
	}
	return key
}

// envName is the name of a KEY=VALUE variable.
func envName(kv string) string {
	name, _, _ := strings.Cut(kv, "=")
	return name
}
