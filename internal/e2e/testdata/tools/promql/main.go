// Command promql parses PromQL expressions with Prometheus's own parser,
// for the end-to-end test of the alerting rules in configs/: it reads a
// JSON list of expressions on stdin and writes a JSON list of results,
// one per expression, each with the metric names the expression selects
// or the parser's error.
//
// It is a module of its own (internal/e2e/testdata/tools), built by the
// test that uses it, so that the hitless module does not depend on
// Prometheus, which pulls in tens of megabytes of modules for this one
// check.
package main

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/prometheus/prometheus/promql/parser"
)

// A result is what one expression selects, or why it does not parse.
type result struct {
	Metrics []string `json:"metrics"`
	Error   string   `json:"error,omitempty"`
}

func main() {
	var exprs []string
	if err := json.NewDecoder(os.Stdin).Decode(&exprs); err != nil {
		fmt.Fprintln(os.Stderr, "promql: want a JSON list of expressions on stdin:", err)
		os.Exit(2)
	}
	out := make([]result, len(exprs))
	for i, e := range exprs {
		out[i] = parse(e)
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		fmt.Fprintln(os.Stderr, "promql:", err)
		os.Exit(1)
	}
}

// parse returns the names of the metrics expr selects.
func parse(expr string) result {
	node, err := parser.NewParser(parser.Options{}).ParseExpr(expr)
	if err != nil {
		return result{Error: err.Error()}
	}
	var r result
	parser.Inspect(node, func(n parser.Node, _ []parser.Node) error {
		if vs, ok := n.(*parser.VectorSelector); ok {
			r.Metrics = append(r.Metrics, vs.Name)
		}
		return nil
	})
	return r
}
