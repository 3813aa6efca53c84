//go:build linux

package metrics

import (
	"bufio"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
)

// contentType is that of the Prometheus text format, version 0.0.4, the
// format every Prometheus server and scraper reads.
const contentType = "text/plain; version=0.0.4; charset=utf-8"

// A family is one metric family of the text format: its name, HELP text,
// TYPE, and its samples, written in the order given.
type family struct {
	name, help, typ string
	samples         []sample
}

// A sample is one line: the family's name with a suffix (_bucket, _sum,
// _count for histograms and summaries), labels as name, value pairs, and
// the value.
type sample struct {
	suffix string
	labels []string
	value  float64
}

// add appends a sample of the family's own name.
func (f *family) add(v float64, labels ...string) {
	f.samples = append(f.samples, sample{labels: labels, value: v})
}

// writeText writes fams in the text format, sorted by name, as the
// Prometheus client does; a family without samples is left out.
func writeText(w io.Writer, fams []family) error {
	slices.SortFunc(fams, func(a, b family) int { return strings.Compare(a.name, b.name) })
	bw := bufio.NewWriter(w)
	for _, f := range fams {
		if len(f.samples) == 0 {
			continue
		}
		bw.WriteString("# HELP " + f.name + " " + helpEscaper.Replace(f.help) + "\n")
		bw.WriteString("# TYPE " + f.name + " " + f.typ + "\n")
		for _, s := range f.samples {
			bw.WriteString(f.name + s.suffix)
			for i := 0; i+1 < len(s.labels); i += 2 {
				if i == 0 {
					bw.WriteByte('{')
				} else {
					bw.WriteByte(',')
				}
				bw.WriteString(s.labels[i] + `="` + labelEscaper.Replace(s.labels[i+1]) + `"`)
				if i+2 >= len(s.labels) {
					bw.WriteByte('}')
				}
			}
			bw.WriteByte(' ')
			bw.WriteString(formatFloat(s.value))
			bw.WriteByte('\n')
		}
	}
	return bw.Flush()
}

var (
	helpEscaper  = strings.NewReplacer(`\`, `\\`, "\n", `\n`)
	labelEscaper = strings.NewReplacer(`\`, `\\`, "\n", `\n`, `"`, `\"`)
)

// formatFloat writes a value as the text format has it: the shortest
// representation that reads back the same, and +Inf, -Inf, NaN.
func formatFloat(v float64) string {
	switch {
	case math.IsInf(v, +1):
		return "+Inf"
	case math.IsInf(v, -1):
		return "-Inf"
	case math.IsNaN(v):
		return "NaN"
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}
