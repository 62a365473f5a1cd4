package main

import (
	"context"
	"flag"
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"
)

var versionCmd = &command{
	name: "version", args: "",
	summary: "print the module version, VCS revision and Go version it was built with",
	setup: func(*flag.FlagSet) runFunc {
		return func(_ context.Context, e *env, _ []string) error {
			bi, _ := debug.ReadBuildInfo()
			fmt.Fprintln(e.stdout, versionLine(bi))
			return nil
		}
	},
}

// versionLine says which wsbridge this is: the module version (a release
// for `go install ...@vX`, a pseudo-version or (devel) for a build in a
// checkout) and the commit, from what the go command stamped into the
// binary.
func versionLine(bi *debug.BuildInfo) string {
	version, revision, when, modified := "(unknown)", "", "", false
	if bi != nil {
		version = bi.Main.Version
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				revision = s.Value
			case "vcs.time":
				when = s.Value
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "wsbridge %s", version)
	switch {
	case revision == "":
		b.WriteString(" (no VCS revision: built outside a git checkout or with -buildvcs=false)")
	default:
		fmt.Fprintf(&b, " (revision %s", revision)
		if when != "" {
			fmt.Fprintf(&b, ", %s", when)
		}
		if modified {
			b.WriteString(", modified")
		}
		b.WriteString(")")
	}
	fmt.Fprintf(&b, " %s %s/%s", runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return b.String()
}
