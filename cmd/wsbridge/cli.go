package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"strings"
)

// env is what a command reads and writes besides its arguments.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	// onListen, for tests, learns the address serve bound.
	onListen func(net.Addr)
}

// runFunc runs a command once its flags are parsed; pos are its
// positional arguments, already counted.
type runFunc func(ctx context.Context, e *env, pos []string) error

// command is one of wsbridge's commands. Its flags are registered by
// setup, which is also what help prints, so that a command's help lists
// its own flags and no other command's.
type command struct {
	name    string // as typed after wsbridge: "serve", "keyring set"
	args    string // synopsis after the name, for help
	summary string // one line for `wsbridge help`
	detail  string // what `wsbridge NAME -h` says below the synopsis
	minPos  int    // positional arguments taken
	maxPos  int
	setup   func(fs *flag.FlagSet) runFunc
}

// commands lists every command in the order help shows them.
var commands = []*command{
	serveCmd, checkCmd,
	keyringInitCmd, keyringSetCmd, keyringListCmd, keyringDeleteCmd,
	tokenCmd, passwdCmd, healthcheckCmd, versionCmd,
}

func lookupCommand(name string) *command {
	for _, c := range commands {
		if c.name == name {
			return c
		}
	}
	return nil
}

// usageError is a command line the command cannot run: exit status 2,
// and a pointer to the help that says how.
type usageError struct {
	cmd string // the command whose help to point at, "" for wsbridge's own
	err error
}

func (e *usageError) Error() string { return e.err.Error() }

// isHelpWord reports whether arg asks for help, in any of the spellings
// every command accepts.
func isHelpWord(arg string) bool {
	return arg == "help" || arg == "-h" || arg == "-help" || arg == "--help"
}

// run is main without os.Exit: exit status 0 on success and when help was
// asked for, 1 when the command failed, 2 when the command line was wrong.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	e := &env{stdin: stdin, stdout: stdout, stderr: stderr}
	err := dispatch(ctx, args, e)
	var ue *usageError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ue):
		fmt.Fprintln(stderr, "wsbridge:", ue.err)
		if ue.cmd != "" {
			fmt.Fprintf(stderr, "Run 'wsbridge %s -h' for its usage.\n", ue.cmd)
		} else {
			fmt.Fprint(stderr, "\n", commandList())
		}
		return 2
	default:
		fmt.Fprintln(stderr, "wsbridge:", err)
		return 1
	}
}

// dispatch picks the command from the first words of args. With none, or
// with flags first, it is serve: `wsbridge -config FILE`.
func dispatch(ctx context.Context, args []string, e *env) error {
	if len(args) == 0 {
		return serveCmd.exec(ctx, nil, e)
	}
	first := args[0]
	switch {
	case isHelpWord(first):
		return helpCommand(args[1:], e)
	case first == "keyring":
		return keyringGroup(ctx, args[1:], e)
	case first == "-version" || first == "--version":
		// What other tools answer; without it the flag reaches serve,
		// which knows no such flag.
		return versionCmd.exec(ctx, args[1:], e)
	case strings.HasPrefix(first, "-"):
		return serveCmd.exec(ctx, args, e)
	}
	if c := lookupCommand(first); c != nil {
		return c.exec(ctx, args[1:], e)
	}
	return &usageError{err: fmt.Errorf("unknown command %q", first)}
}

// keyringGroup runs `wsbridge keyring SUBCOMMAND`.
func keyringGroup(ctx context.Context, args []string, e *env) error {
	if len(args) == 0 {
		return &usageError{cmd: "keyring", err: errors.New("keyring: name a subcommand: init, set, list or delete")}
	}
	if isHelpWord(args[0]) {
		return helpCommand(append([]string{"keyring"}, args[1:]...), e)
	}
	c := lookupCommand("keyring " + args[0])
	if c == nil {
		return &usageError{cmd: "keyring", err: fmt.Errorf("keyring: unknown subcommand %q (want init, set, list or delete)", args[0])}
	}
	return c.exec(ctx, args[1:], e)
}

// helpCommand is `wsbridge help [COMMAND]`: it prints to stdout, and
// asking for help is no error.
func helpCommand(args []string, e *env) error {
	name := strings.Join(args, " ")
	switch {
	case name == "" || name == "help":
		fmt.Fprint(e.stdout, topHelp())
		return nil
	case name == "keyring":
		fmt.Fprint(e.stdout, keyringHelp())
		return nil
	}
	c := lookupCommand(name)
	if c == nil {
		return &usageError{err: fmt.Errorf("help: unknown command %q", name)}
	}
	c.help(e.stdout)
	return nil
}

// exec parses args for c and runs it. -h, -help, --help (anywhere among
// the flags) and a lone `help` print c's help to stdout instead.
func (c *command) exec(ctx context.Context, args []string, e *env) error {
	if len(args) == 1 && args[0] == "help" {
		c.help(out(e.stdout))
		return nil
	}
	fs := c.flagSet()
	runc := c.setup(fs)
	pos, err := parseInterspersed(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		c.help(out(e.stdout))
		return nil
	}
	if err != nil {
		return &usageError{cmd: c.name, err: fmt.Errorf("%s: %w", c.name, err)}
	}
	switch {
	case len(pos) < c.minPos:
		return &usageError{cmd: c.name, err: fmt.Errorf("%s: missing argument: usage: wsbridge %s %s", c.name, c.name, c.args)}
	case len(pos) > c.maxPos:
		return &usageError{cmd: c.name, err: fmt.Errorf("%s: unexpected argument %q", c.name, pos[c.maxPos])}
	}
	return runc(ctx, e, pos)
}

func out(w io.Writer) io.Writer {
	if w == nil {
		return io.Discard
	}
	return w
}

// flagSet is a FlagSet that prints nothing itself: exec reports its errors
// and prints help to the right stream.
func (c *command) flagSet() *flag.FlagSet {
	fs := flag.NewFlagSet("wsbridge "+c.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return fs
}

// help prints c's synopsis, what it does and its flags.
func (c *command) help(w io.Writer) {
	fmt.Fprintf(w, "usage: %s\n\n%s\n", strings.TrimSpace("wsbridge "+c.name+" "+c.args), c.summary)
	if c.detail != "" {
		fmt.Fprintf(w, "\n%s\n", strings.TrimSpace(c.detail))
	}
	fs := c.flagSet()
	c.setup(fs)
	n := 0
	fs.VisitAll(func(*flag.Flag) { n++ })
	if n > 0 {
		fmt.Fprint(w, "\nflags:\n")
		fs.SetOutput(w)
		fs.PrintDefaults()
	}
}

// commandList is the commands with their one-line summaries.
func commandList() string {
	var b strings.Builder
	b.WriteString("commands:\n")
	for _, c := range commands {
		fmt.Fprintf(&b, "  %-16s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(&b, "  %-16s %s\n", "help [COMMAND]", "this list, or a command's usage and flags")
	return b.String()
}

func topHelp() string {
	return "wsbridge: a WebSocket gateway for message brokers.\n\n" +
		"usage: wsbridge [COMMAND] [FLAGS]   (no command: serve)\n\n" +
		commandList() +
		"\nRun 'wsbridge COMMAND -h' (or -help, --help, help) for a command's usage and flags.\n\n" +
		keyringNote
}

func keyringHelp() string {
	var b strings.Builder
	b.WriteString("usage: wsbridge keyring SUBCOMMAND [FLAGS]\n\nThe encrypted store of broker credentials.\n\nsubcommands:\n")
	for _, c := range commands {
		if sub, ok := strings.CutPrefix(c.name, "keyring "); ok {
			fmt.Fprintf(&b, "  %-8s %s\n", sub, c.summary)
		}
	}
	b.WriteString("\nRun 'wsbridge keyring SUBCOMMAND -h' for its flags.\n\n" + keyringNote)
	return b.String()
}

// keyringNote says where the keyring and its key are looked for.
const keyringNote = `The keyring path comes from -keyring, WSBRIDGE_KEYRING, or the config's
keyring.path (default wsbridge.keyring, relative to the config file's directory;
with no -config, the working directory). The master key comes from
WSBRIDGE_KEYRING_KEY (the key), WSBRIDGE_KEYRING_KEY_FILE, the config's
keyring.key_file, or the keyring path + ".key".
`

// commonFlags are accepted by every command that reads the config.
type commonFlags struct {
	config, keyring string
}

// register adds the flags; configRequired says that the command needs
// -config (check does), where the others fall back to the embedded default.
func (f *commonFlags) register(fs *flag.FlagSet, configRequired bool) {
	usage := "YAML config `FILE` (default: the embedded default)"
	if configRequired {
		usage = "YAML config `FILE` (required)"
	}
	fs.StringVar(&f.config, "config", "", usage)
	fs.StringVar(&f.keyring, "keyring", "", "keyring `FILE` (overrides WSBRIDGE_KEYRING and keyring.path)")
}

// parseInterspersed parses flags that may come before or after positional
// arguments, as in `keyring set NAME -username gw`. After "--" every
// argument is positional.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if consumed := len(args) - len(rest); consumed > 0 && args[consumed-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}
