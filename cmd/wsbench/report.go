package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
)

// reportCommand reads JSON result lines (files, or standard input) and
// prints, per scenario, rate and label, the median of each measure over
// the runs and its ratio to the baseline label: runs alternate between
// systems, so medians and ratios mean more than any single number on a
// shared box. -chart also draws them as a PNG.
func reportCommand(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("report", flag.ContinueOnError)
	fs.SetOutput(stderr)
	baseline := fs.String("baseline", "", "label the ratios are against (default: the first label seen)")
	chart := fs.String("chart", "", "also draw the medians into this PNG file")
	title := fs.String("title", "", "the chart's title")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var runs []result
	var conns []connsResult
	read := func(r io.Reader, name string) error {
		sc := bufio.NewScanner(r)
		for n := 1; sc.Scan(); n++ {
			line := []byte(strings.TrimSpace(sc.Text()))
			if len(line) == 0 || line[0] != '{' {
				continue
			}
			var kind struct{ Scenario string }
			if err := json.Unmarshal(line, &kind); err != nil {
				return fmt.Errorf("%s:%d: %v", name, n, err)
			}
			var err error
			if kind.Scenario == "conns" {
				var c connsResult
				err = json.Unmarshal(line, &c)
				conns = append(conns, c)
			} else {
				var res result
				err = json.Unmarshal(line, &res)
				runs = append(runs, res)
			}
			if err != nil {
				return fmt.Errorf("%s:%d: %v", name, n, err)
			}
		}
		return sc.Err()
	}
	if fs.NArg() == 0 {
		if err := read(stdin, "stdin"); err != nil {
			return err
		}
	}
	for _, name := range fs.Args() {
		f, err := os.Open(name)
		if err != nil {
			return err
		}
		err = read(f, name)
		f.Close()
		if err != nil {
			return err
		}
	}
	if len(runs) == 0 && len(conns) == 0 {
		return errors.New("report: no result lines")
	}
	var groups []rateGroup
	var cs []connsSummary
	if len(runs) > 0 {
		groups = summarize(runs)
		fmt.Fprint(stdout, markdownReport(groups, *baseline))
	}
	if len(conns) > 0 {
		cs = summarizeConns(conns)
		fmt.Fprint(stdout, connsReport(cs, *baseline))
	}
	if *chart != "" {
		return drawChart(*chart, *title, groups, cs)
	}
	return nil
}

// summary is one label's medians at one rate.
type summary struct {
	label                           string
	runs, lost, dup                 int
	msgsPerSec, p50, p90, p99, maxL float64
}

// rateGroup is every label's summary at one offered rate (0: max rate),
// labels in the order first seen.
type rateGroup struct {
	rate   float64
	warmup float64 // seconds at the start of each run not timed (the longest)
	sums   []summary
}

func median(v []float64) float64 {
	slices.Sort(v)
	n := len(v)
	if n%2 == 1 {
		return v[n/2]
	}
	return (v[n/2-1] + v[n/2]) / 2
}

// labelsInOrder groups items by label, labels in the order first seen.
func labelsInOrder[T any](items []T, label func(T) string) ([]string, map[string][]T) {
	var labels []string
	by := map[string][]T{}
	for _, it := range items {
		l := label(it)
		if _, ok := by[l]; !ok {
			labels = append(labels, l)
		}
		by[l] = append(by[l], it)
	}
	return labels, by
}

// summarize takes the medians per rate and label.
func summarize(results []result) []rateGroup {
	var rates []float64
	for _, r := range results {
		if !slices.Contains(rates, r.Rate) {
			rates = append(rates, r.Rate)
		}
	}
	slices.Sort(rates)
	var groups []rateGroup
	for _, rate := range rates {
		atRate := slices.DeleteFunc(slices.Clone(results), func(r result) bool { return r.Rate != rate })
		labels, by := labelsInOrder(atRate, func(r result) string { return r.Label })
		g := rateGroup{rate: rate}
		for _, l := range labels {
			s := summary{label: l, runs: len(by[l])}
			var tp, p50, p90, p99, mx []float64
			for _, r := range by[l] {
				g.warmup = max(g.warmup, r.WarmupS)
				tp, p50, p90, p99, mx = append(tp, r.MsgsPerSec), append(p50, r.P50us), append(p90, r.P90us), append(p99, r.P99us), append(mx, r.MaxUs)
				s.lost += r.Lost
				s.dup += r.Duplicated
			}
			s.msgsPerSec, s.p50, s.p90, s.p99, s.maxL = median(tp), median(p50), median(p90), median(p99), median(mx)
			g.sums = append(g.sums, s)
		}
		groups = append(groups, g)
	}
	return groups
}

// baselineOf is the summary named baseline, or the first.
func baselineOf[T any](sums []T, baseline string, label func(T) string) T {
	for _, s := range sums {
		if label(s) == baseline {
			return s
		}
	}
	return sums[0]
}

func markdownReport(groups []rateGroup, baseline string) string {
	var b strings.Builder
	for _, g := range groups {
		bs := baselineOf(g.sums, baseline, func(s summary) string { return s.label })
		what := "as fast as the window allows"
		if g.rate > 0 {
			what = fmt.Sprintf("fixed rate %.0f msg/s", g.rate)
		}
		if g.warmup > 0 {
			what += fmt.Sprintf("; messages due in each run's first %.1fs not timed", g.warmup)
		}
		fmt.Fprintf(&b, "\n### %s (medians; ratios against %s)\n\n", what, bs.label)
		b.WriteString("| system | runs | msgs/s | x | p50 us | p90 us | p99 us | x p99 | max us | lost | dup |\n")
		b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|\n")
		for _, s := range g.sums {
			fmt.Fprintf(&b, "| %s | %d | %.0f | %.2f | %.0f | %.0f | %.0f | %.2f | %.0f | %d | %d |\n",
				s.label, s.runs, s.msgsPerSec, s.msgsPerSec/bs.msgsPerSec, s.p50, s.p90, s.p99, s.p99/bs.p99, s.maxL, s.lost, s.dup)
		}
	}
	return b.String()
}

// connsSummary is one label's medians over its conns runs.
type connsSummary struct {
	label, mode                   string
	runs, attempted, failed, held int // held: the fewest held to the end in any run
	p50, p99                      float64
	perConn, perConnGC            float64 // bytes
}

func summarizeConns(results []connsResult) []connsSummary {
	labels, by := labelsInOrder(results, func(r connsResult) string { return r.Label })
	var out []connsSummary
	for _, l := range labels {
		rs := by[l]
		s := connsSummary{label: l, mode: rs[0].Mode, runs: len(rs), held: rs[0].HeldToEnd}
		var p50, p99, per, perGC []float64
		for _, r := range rs {
			s.attempted += r.Attempted
			s.failed += r.Failed
			s.held = min(s.held, r.HeldToEnd)
			p50, p99, per = append(p50, r.P50us), append(p99, r.P99us), append(per, r.BytesPerConn)
			if r.BytesPerConnAfterGC > 0 {
				perGC = append(perGC, r.BytesPerConnAfterGC)
			}
		}
		s.p50, s.p99, s.perConn = median(p50), median(p99), median(per)
		if len(perGC) > 0 {
			s.perConnGC = median(perGC)
		}
		out = append(out, s)
	}
	return out
}

func connsReport(sums []connsSummary, baseline string) string {
	var b strings.Builder
	bs := baselineOf(sums, baseline, func(s connsSummary) string { return s.label })
	fmt.Fprintf(&b, "\n### idle connections (medians; ratios against %s)\n\n", bs.label)
	b.WriteString("| system | mode | runs | attempted | failed | held (fewest) | handshake p50 us | p99 us | KB per connection | x | after a GC |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, s := range sums {
		gc := "-"
		if s.perConnGC > 0 {
			gc = fmt.Sprintf("%.1f", s.perConnGC/1000)
		}
		fmt.Fprintf(&b, "| %s | %s | %d | %d | %d | %d | %.0f | %.0f | %.1f | %.2f | %s |\n",
			s.label, s.mode, s.runs, s.attempted, s.failed, s.held, s.p50, s.p99, s.perConn/1000, s.perConn/bs.perConn, gc)
	}
	return b.String()
}
