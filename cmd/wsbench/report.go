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
// prints, per rate and label, the median of each measure over the runs
// and its ratio to the baseline label: runs alternate between systems, so
// medians and ratios mean more than any single number on a shared box.
func reportCommand(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("report", flag.ContinueOnError)
	fs.SetOutput(stderr)
	baseline := fs.String("baseline", "", "label the ratios are against (default: the first label seen)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var results []result
	read := func(r io.Reader, name string) error {
		sc := bufio.NewScanner(r)
		for n := 1; sc.Scan(); n++ {
			line := strings.TrimSpace(sc.Text())
			if !strings.HasPrefix(line, "{") {
				continue
			}
			var res result
			if err := json.Unmarshal([]byte(line), &res); err != nil {
				return fmt.Errorf("%s:%d: %v", name, n, err)
			}
			results = append(results, res)
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
	if len(results) == 0 {
		return errors.New("report: no result lines")
	}
	fmt.Fprint(stdout, markdownReport(results, *baseline))
	return nil
}

// summary is one label's medians at one rate.
type summary struct {
	label                           string
	runs, lost, dup                 int
	msgsPerSec, p50, p90, p99, maxL float64
}

func median(v []float64) float64 {
	slices.Sort(v)
	n := len(v)
	if n%2 == 1 {
		return v[n/2]
	}
	return (v[n/2-1] + v[n/2]) / 2
}

func markdownReport(results []result, baseline string) string {
	var b strings.Builder
	var rates []float64
	for _, r := range results {
		if !slices.Contains(rates, r.Rate) {
			rates = append(rates, r.Rate)
		}
	}
	slices.Sort(rates)
	for _, rate := range rates {
		var labels []string
		by := map[string][]result{}
		for _, r := range results {
			if r.Rate != rate {
				continue
			}
			if _, ok := by[r.Label]; !ok {
				labels = append(labels, r.Label)
			}
			by[r.Label] = append(by[r.Label], r)
		}
		sums := map[string]summary{}
		for _, l := range labels {
			s := summary{label: l, runs: len(by[l])}
			var tp, p50, p90, p99, mx []float64
			for _, r := range by[l] {
				tp, p50, p90, p99, mx = append(tp, r.MsgsPerSec), append(p50, r.P50us), append(p90, r.P90us), append(p99, r.P99us), append(mx, r.MaxUs)
				s.lost += r.Lost
				s.dup += r.Duplicated
			}
			s.msgsPerSec, s.p50, s.p90, s.p99, s.maxL = median(tp), median(p50), median(p90), median(p99), median(mx)
			sums[l] = s
		}
		base := baseline
		if _, ok := sums[base]; !ok {
			base = labels[0]
		}
		what := "as fast as the window allows"
		if rate > 0 {
			what = fmt.Sprintf("fixed rate %.0f msg/s", rate)
		}
		fmt.Fprintf(&b, "\n### %s (medians; ratios against %s)\n\n", what, base)
		b.WriteString("| system | runs | msgs/s | x | p50 us | p90 us | p99 us | x p99 | max us | lost | dup |\n")
		b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|\n")
		bs := sums[base]
		for _, l := range labels {
			s := sums[l]
			fmt.Fprintf(&b, "| %s | %d | %.0f | %.2f | %.0f | %.0f | %.0f | %.2f | %.0f | %d | %d |\n",
				l, s.runs, s.msgsPerSec, s.msgsPerSec/bs.msgsPerSec, s.p50, s.p90, s.p99, s.p99/bs.p99, s.maxL, s.lost, s.dup)
		}
	}
	return b.String()
}
