package machine

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// The machine is pure: no system call, no goroutine, no clock. Its
// imports prove the first (nothing that reaches the system: no os,
// syscall, x/sys, net, sync); this test checks them, and that no file
// starts a goroutine, reads the clock or arms a timer of its own, or
// builds for some systems only.
func TestPure(t *testing.T) {
	allowed := []string{"cmp", "encoding/json", "errors", "fmt", "log/slog", "slices", "strconv", "strings", "time"}
	clock := []string{"Now", "Since", "Until", "Sleep", "After", "AfterFunc", "NewTimer", "NewTicker", "Tick"}
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, parser.ParseComments)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range f.Comments {
			for _, line := range c.List {
				if strings.HasPrefix(line.Text, "//go:build") || strings.HasPrefix(line.Text, "// +build") {
					t.Errorf("%s has a build constraint: the machine builds everywhere", name)
				}
			}
		}
		for _, imp := range f.Imports {
			if path, _ := strconv.Unquote(imp.Path.Value); !slices.Contains(allowed, path) {
				t.Errorf("%s imports %s: the machine imports only %v", name, path, allowed)
			}
		}
		ast.Inspect(f, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.GoStmt:
				t.Errorf("%s: a goroutine", fset.Position(n.Pos()))
			case *ast.SelectorExpr:
				if x, ok := n.X.(*ast.Ident); ok && x.Name == "time" && slices.Contains(clock, n.Sel.Name) {
					t.Errorf("%s: time.%s: the time comes with each event", fset.Position(n.Pos()), n.Sel.Name)
				}
			}
			return true
		})
	}
}
