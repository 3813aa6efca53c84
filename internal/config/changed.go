//go:build linux

package config

import (
	"fmt"
	"reflect"
	"slices"

	"go.yaml.in/yaml/v3"
)

// Changed lists the keys whose values differ between two configuration
// documents, as dotted paths ("drain_timeout", "restart.backoff_min",
// "listen"), sorted: what an upgrade of hitless in place, which keeps the
// settings it started with, reports as taking effect at the next start.
// A list is one key. Comments and layout do not count.
func Changed(before, after []byte) ([]string, error) {
	var a, b any
	if err := yaml.Unmarshal(before, &a); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	if err := yaml.Unmarshal(after, &b); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	// An empty document (or one of comments) sets nothing.
	if a == nil {
		a = map[string]any{}
	}
	if b == nil {
		b = map[string]any{}
	}
	var keys []string
	changed("", a, b, &keys)
	slices.Sort(keys)
	return keys, nil
}

func changed(path string, a, b any, keys *[]string) {
	am, aok := a.(map[string]any)
	bm, bok := b.(map[string]any)
	if !aok || !bok {
		if !reflect.DeepEqual(a, b) {
			*keys = append(*keys, path)
		}
		return
	}
	for k, av := range am {
		changed(join2(path, k), av, bm[k], keys)
	}
	for k, bv := range bm {
		if _, ok := am[k]; !ok {
			changed(join2(path, k), nil, bv, keys)
		}
	}
}

func join2(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// Without returns the document data without the top-level keys given,
// the rest as it was: the settings an upgrade from a release that did not
// carry its settings keeps from the image before, whatever the file says.
func Without(data []byte, keys ...string) ([]byte, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	if len(doc.Content) == 0 || doc.Content[0].Kind != yaml.MappingNode {
		return data, nil // empty, or not a mapping: Parse says what is wrong
	}
	m := doc.Content[0]
	for i := 0; i+1 < len(m.Content); {
		if slices.Contains(keys, m.Content[i].Value) {
			m.Content = slices.Delete(m.Content, i, i+2)
			continue
		}
		i += 2
	}
	return yaml.Marshal(&doc)
}
