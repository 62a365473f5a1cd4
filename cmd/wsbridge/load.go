package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"

	"go.yaml.in/yaml/v3"
)

// loadConfig reads and checks a config file; name "" means the embedded
// default.
func loadConfig(name string) (*Config, error) {
	data, label := defaultConfig, "embedded default config"
	if name != "" {
		var err error
		if data, err = os.ReadFile(name); err != nil {
			return nil, fmt.Errorf("config: %w", err)
		}
		label = name
	}
	cfg, err := parseConfig(label, data)
	if err != nil {
		return nil, err
	}
	cfg.file = name
	return cfg, nil
}

var (
	lineRE    = regexp.MustCompile(`^line (\d+): (.*)$`)
	unknownRE = regexp.MustCompile(`^field (\S+) not found in type (\S+)$`)
	typeRE    = regexp.MustCompile("^cannot unmarshal !!(\\w+) `(.*)` into (\\S+)$")
)

// parseConfig decodes strictly (unknown keys are errors), fills defaults
// and checks every value, reporting file:line: reason.
func parseConfig(file string, data []byte) (*Config, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, yamlError(file, err)
	}
	cfg := &Config{dir: filepath.Dir(file)}
	dec := yaml.NewDecoder(strings.NewReader(string(data)))
	dec.KnownFields(true)
	// Unknown keys and values of the wrong type (a TypeError) leave the
	// rest decoded: the checks still run, so that one run reports every
	// problem of the file, not one layer per run.
	var decodeErrs []error
	if err := dec.Decode(cfg); err != nil && !errors.Is(err, io.EOF) {
		var te *yaml.TypeError
		if !errors.As(err, &te) {
			return nil, yamlError(file, err)
		}
		decodeErrs = yamlErrors(file, te)
	}
	c := checker{file: file, root: &root}
	cfg.check(&c)
	errs := decodeErrs
	// A value the decoder could not take was left unset, and a check of
	// the same line would only say so again ("routes: x" is not a list;
	// "at least one route is needed").
	bad := map[int]bool{}
	for _, e := range decodeErrs {
		if ce, ok := e.(*ConfigError); ok && ce.Line > 0 {
			bad[ce.Line] = true
		}
	}
	for _, e := range c.errs {
		if ce, ok := e.(*ConfigError); ok && bad[ce.Line] {
			continue
		}
		errs = append(errs, e)
	}
	if len(errs) > 0 {
		return nil, errors.Join(sortByLine(errs)...)
	}
	return cfg, nil
}

// sortByLine orders errors as they appear in the file, so that the
// decoder's and the checks' interleave; the order within a line is kept.
func sortByLine(errs []error) []error {
	line := func(e error) int {
		if ce, ok := e.(*ConfigError); ok {
			return ce.Line
		}
		return 0
	}
	sort.SliceStable(errs, func(i, j int) bool { return line(errs[i]) < line(errs[j]) })
	return errs
}

func yamlError(file string, err error) error {
	var te *yaml.TypeError
	if errors.As(err, &te) {
		return errors.Join(yamlErrors(file, te)...)
	}
	return lineError(file, strings.TrimPrefix(err.Error(), "yaml: "))
}

// yamlErrors are the decoder's complaints, each located.
func yamlErrors(file string, te *yaml.TypeError) []error {
	errs := make([]error, 0, len(te.Errors))
	for _, e := range te.Errors {
		errs = append(errs, lineError(file, e))
	}
	return errs
}

func lineError(file, msg string) error {
	line := 0
	if m := lineRE.FindStringSubmatch(msg); m != nil {
		line, _ = strconv.Atoi(m[1])
		msg = m[2]
	}
	if m := unknownRE.FindStringSubmatch(msg); m != nil {
		msg = fmt.Sprintf("unknown key %q", m[1])
		if near := closestKey(m[1], configKeys()[m[2]]); near != "" {
			msg += fmt.Sprintf("; did you mean %q?", near)
		}
	} else if m := typeRE.FindStringSubmatch(msg); m != nil {
		msg = fmt.Sprintf("expected %s, got %s %q", friendlyType(m[3]), m[1], m[2])
	}
	return &ConfigError{File: file, Line: line, Msg: msg}
}

// configKeys maps each struct type of the config schema, by the name the
// YAML decoder reports ("main.TLSConfig"), to the keys it knows.
var configKeys = sync.OnceValue(func() map[string][]string {
	keys := map[string][]string{}
	var walk func(t reflect.Type)
	walk = func(t reflect.Type) {
		for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice || t.Kind() == reflect.Map {
			t = t.Elem()
		}
		if t.Kind() != reflect.Struct || keys[t.String()] != nil {
			return
		}
		keys[t.String()] = []string{}
		for f := range t.Fields() {
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if name == "" || name == "-" {
				continue
			}
			keys[t.String()] = append(keys[t.String()], name)
			walk(f.Type)
		}
	}
	walk(reflect.TypeFor[Config]())
	return keys
})

// closestKey is the known key nearest to an unknown one, when it is near
// enough to be a typo (edit distance at most 2, and at most a third of
// its length; two letters swapped count one, so "auht" is "auth") or its
// start ("max_frame" for "max_frame_bytes"); "" otherwise.
func closestKey(key string, known []string) string {
	best, bestD, starts := "", 0, []string{}
	for _, k := range known {
		d := editDistance(key, k)
		if d <= 2 && 3*d <= len(k) && (best == "" || d < bestD || d == bestD && k < best) {
			best, bestD = k, d
		}
		if strings.HasPrefix(k, key+"_") {
			starts = append(starts, k)
		}
	}
	if best == "" && len(starts) == 1 {
		return starts[0]
	}
	return best
}

// editDistance is the optimal string alignment distance between a and b:
// insertions, deletions, substitutions and swaps of adjacent bytes, the
// typos hands make.
func editDistance(a, b string) int {
	pprev, prev, cur := make([]int, len(b)+1), make([]int, len(b)+1), make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			sub := prev[j-1]
			if a[i-1] != b[j-1] {
				sub++
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, sub)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				cur[j] = min(cur[j], pprev[j-2]+1)
			}
		}
		pprev, prev, cur = prev, cur, pprev
	}
	return prev[len(b)]
}

func friendlyType(t string) string {
	switch {
	case strings.HasPrefix(t, "[]"):
		return "a list"
	case strings.HasPrefix(t, "map["):
		return "a mapping"
	case t == "int":
		return "a whole number"
	case t == "bool":
		return "true or false"
	case t == "string":
		return "a string"
	}
	return "a mapping"
}
