//go:build linux

package main

import (
	"strings"
	"time"

	"github.com/hitless/hitless/internal/config"
)

// value is a flag read by a parser of the config file (config.ParseDuration,
// config.ParseSignal, ...), so that a flag and the file accept the same text
// and say the same thing about text they refuse.
type value[T any] struct {
	p      *T
	parse  func(string) (T, error)
	format func(T) string // the inverse of parse, for the default in --help
	typ    string         // the argument's name in --help
}

func (v *value[T]) Set(s string) error {
	x, err := v.parse(s)
	if err != nil {
		return err
	}
	*v.p = x
	return nil
}

func (v *value[T]) String() string {
	if v == nil || v.p == nil {
		return ""
	}
	return v.format(*v.p)
}

func (v *value[T]) Type() string { return v.typ }

// list is a repeatable flag: each use parses one more item.
type list[T any] struct {
	p      *[]T
	parse  func(string) (T, error)
	format func(T) string
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
	if l == nil || l.p == nil || len(*l.p) == 0 {
		return ""
	}
	s := make([]string, len(*l.p))
	for i, x := range *l.p {
		s[i] = l.format(x)
	}
	return "[" + strings.Join(s, ",") + "]"
}

func (l *list[T]) Type() string { return "stringArray" }

// durationFlag is a duration as the config file takes it: positive, with
// a unit.
func durationFlag(p *time.Duration) *value[time.Duration] {
	return &value[time.Duration]{p, config.ParseDuration, time.Duration.String, "duration"}
}

// optionalDurationFlag is a duration that may also be 0, for none.
func optionalDurationFlag(p *time.Duration) *value[time.Duration] {
	return &value[time.Duration]{p, config.ParseOptionalDuration, config.FormatOptionalDuration, "duration"}
}

// textFlag is a string flag whose value check, if any, is the config
// file's.
func textFlag(p *string, check func(string) error) *value[string] {
	return &value[string]{p, config.Checked(check), func(s string) string { return s }, "string"}
}
