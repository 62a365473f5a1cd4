package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/wsbridge/wsbridge/keyring"
)

var keyringInitCmd = &command{
	name: "keyring init", args: "[-config FILE] [-keyring FILE]",
	summary: "create an empty keyring and, if no key is configured, its master key file",
	detail:  keyringNote,
	setup: func(fs *flag.FlagSet) runFunc {
		var cf commonFlags
		cf.register(fs, false)
		return func(_ context.Context, e *env, _ []string) error {
			loc, err := keyringAt(cf)
			if err != nil {
				return err
			}
			return keyringInit(loc, e)
		}
	},
}

var keyringSetCmd = &command{
	name: "keyring set", args: "NAME -username USER [-password-stdin] [-config FILE] [-keyring FILE]",
	summary: "store a broker credential under NAME",
	detail: `The password is never taken from the command line. At a terminal it is
prompted for, twice, with echo off; otherwise -password-stdin reads it as one
line from standard input:
  wsbridge keyring set rabbit -username gw -password-stdin <<< "$BROKER_PASSWORD"`,
	minPos: 1, maxPos: 1,
	setup: func(fs *flag.FlagSet) runFunc {
		var cf commonFlags
		cf.register(fs, false)
		username := fs.String("username", "", "the broker `USER` name to store (required)")
		pwStdin := fs.Bool("password-stdin", false, "read the password from standard input (one line)")
		return func(_ context.Context, e *env, pos []string) error {
			name := pos[0]
			_, tty := terminalFd(e.stdin)
			switch {
			case *username == "":
				return &usageError{cmd: "keyring set", err: errors.New("keyring set: -username is required")}
			case !*pwStdin && !tty:
				return &usageError{cmd: "keyring set", err: errors.New("keyring set: pass -password-stdin and the password on standard input (never on the command line)")}
			}
			loc, kr, err := openKeyringAt(cf)
			if err != nil {
				return err
			}
			pw, err := readPassword(e.stdin, e.stderr, fmt.Sprintf("Password for %s (username %s)", name, *username), true)
			if err != nil {
				return fmt.Errorf("keyring set: %w", err)
			}
			if err := kr.Set(name, keyring.Credential{Username: *username, Password: keyring.NewSecret(pw)}); err != nil {
				return loc.writeError(err)
			}
			fmt.Fprintf(e.stdout, "stored %s (username %s) in %s\n", name, *username, loc.path)
			return nil
		}
	},
}

var keyringListCmd = &command{
	name: "keyring list", args: "[-config FILE] [-keyring FILE]",
	summary: "list the entries: names and usernames, never passwords",
	setup: func(fs *flag.FlagSet) runFunc {
		var cf commonFlags
		cf.register(fs, false)
		return func(_ context.Context, e *env, _ []string) error {
			_, kr, err := openKeyringAt(cf)
			if err != nil {
				return err
			}
			for _, name := range kr.Names() {
				c, _ := kr.Get(name)
				fmt.Fprintf(e.stdout, "%s\t%s\n", name, c.Username)
			}
			return nil
		}
	},
}

var keyringDeleteCmd = &command{
	name: "keyring delete", args: "NAME [-config FILE] [-keyring FILE]",
	summary: "remove the entry NAME",
	minPos:  1, maxPos: 1,
	setup: func(fs *flag.FlagSet) runFunc {
		var cf commonFlags
		cf.register(fs, false)
		return func(_ context.Context, e *env, pos []string) error {
			loc, kr, err := openKeyringAt(cf)
			if err != nil {
				return err
			}
			if err := kr.Delete(pos[0]); errors.Is(err, keyring.ErrNoEntry) {
				return fmt.Errorf("%w in keyring %s", err, loc.path)
			} else if err != nil {
				return loc.writeError(err)
			}
			fmt.Fprintf(e.stdout, "deleted %s from %s\n", pos[0], loc.path)
			return nil
		}
	},
}

// keyringAt locates the keyring that the flags and the config name.
func keyringAt(cf commonFlags) (keyringLocation, error) {
	cfg, err := loadConfig(cf.config)
	if err != nil {
		return keyringLocation{}, err
	}
	return locateKeyring(cfg, cf.keyring), nil
}

// openKeyringAt opens the keyring the flags and config name, for the
// keyring commands that read or change an existing one.
func openKeyringAt(cf commonFlags) (keyringLocation, *keyring.Keyring, error) {
	loc, err := keyringAt(cf)
	if err != nil {
		return loc, nil, err
	}
	kr, err := loc.open(nil)
	return loc, kr, err
}

func keyringInit(loc keyringLocation, e *env) error {
	var key keyring.Key
	var err error
	generated := false
	if loc.keyEnv == "" {
		if _, statErr := os.Stat(loc.keyFile); errors.Is(statErr, os.ErrNotExist) {
			if key, err = keyring.GenerateKeyFile(loc.keyFile); err != nil {
				if ae := accessError("master key file", loc.keyFile, loc.keyFrom, true, err); ae != nil {
					return ae
				}
				return err
			}
			generated = true
		}
	}
	if !generated {
		if key, err = loc.key(); err != nil {
			return err
		}
	}
	if _, err := keyring.Create(loc.path, key); err != nil {
		return loc.writeError(err)
	}
	fmt.Fprintf(e.stdout, "created empty keyring %s\n", loc.path)
	if generated {
		fmt.Fprintf(e.stdout, "generated its master key in %s (mode 0600); keep it secret and back it up:\n"+
			"without it the keyring cannot be opened\n", loc.keyFile)
	}
	fmt.Fprintf(e.stdout, "store a broker credential with: %s\n", loc.command("set", "NAME", "-username", "USER"))
	return nil
}

// keyringLocation is where the keyring and its master key are, where each
// came from, and how to name them again in a command to suggest.
type keyringLocation struct {
	path, pathFrom string
	keyEnv         string // WSBRIDGE_KEYRING_KEY, the key itself
	keyFile        string
	keyFrom        string
	flags          []string // -config and -keyring as given, for suggested commands
}

// locateKeyring resolves the keyring and its key. Paths from flags and
// environment variables are relative to the working directory; paths in
// the config, and the default, to the config file's directory (the
// embedded default has none: the working directory), as TLS and auth
// files are.
func locateKeyring(cfg *Config, flagPath string) keyringLocation {
	var loc keyringLocation
	if cfg.file != "" {
		loc.flags = append(loc.flags, "-config", cfg.file)
	}
	if flagPath != "" {
		loc.flags = append(loc.flags, "-keyring", flagPath)
	}
	src := "the config"
	if cfg.file != "" {
		src = cfg.file
	}
	env := os.Getenv("WSBRIDGE_KEYRING")
	switch {
	case flagPath != "":
		loc.path, loc.pathFrom = flagPath, "-keyring"
	case env != "":
		loc.path, loc.pathFrom = env, "WSBRIDGE_KEYRING"
	case filepath.IsAbs(cfg.Keyring.Path):
		loc.path, loc.pathFrom = cfg.Keyring.Path, "keyring.path in "+src
	case cfg.Keyring.Path != "":
		loc.path, loc.pathFrom = cfg.path(cfg.Keyring.Path), "keyring.path in "+src+", relative to its directory"
	case cfg.file != "":
		loc.path, loc.pathFrom = cfg.path("wsbridge.keyring"), "the default, beside "+src
	default:
		loc.path, loc.pathFrom = "wsbridge.keyring", "the default, in the working directory"
	}
	loc.keyEnv = os.Getenv("WSBRIDGE_KEYRING_KEY")
	switch keyEnv := os.Getenv("WSBRIDGE_KEYRING_KEY_FILE"); {
	case keyEnv != "":
		loc.keyFile, loc.keyFrom = keyEnv, "WSBRIDGE_KEYRING_KEY_FILE"
	case cfg.Keyring.KeyFile != "":
		loc.keyFile, loc.keyFrom = cfg.path(cfg.Keyring.KeyFile), "keyring.key_file in "+src
	default:
		loc.keyFile, loc.keyFrom = loc.path+".key", "the keyring path + .key"
	}
	return loc
}

// command is a wsbridge keyring command line for this keyring.
func (l keyringLocation) command(sub string, args ...string) string {
	words := append(append([]string{"wsbridge", "keyring", sub}, args...), l.flags...)
	for i, w := range words {
		words[i] = shellQuote(w)
	}
	return strings.Join(words, " ")
}

// shellQuote quotes w for a POSIX shell when it needs it.
func shellQuote(w string) string {
	if w != "" && strings.Trim(w, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:=@+,") == "" {
		return w
	}
	return "'" + strings.ReplaceAll(w, "'", `'\''`) + "'"
}

// writeError is err from writing the keyring, with what to change when it
// was refused permission.
func (l keyringLocation) writeError(err error) error {
	if ae := accessError("keyring", l.path, l.pathFrom, true, err); ae != nil {
		return ae
	}
	return err
}

// serviceCopy reports whether the keyring is one systemd hands the service
// (LoadCredential=): a copy made when the service started, which a reload
// reads unchanged.
func (l keyringLocation) serviceCopy() bool {
	dir := os.Getenv("CREDENTIALS_DIRECTORY")
	if dir == "" {
		return false
	}
	rel, err := filepath.Rel(dir, l.path)
	return err == nil && !strings.HasPrefix(rel, "..")
}

// credentialFix is the hint of the WARN a broker's refusal of entry
// draws: the keyring command that reaches the keyring the gateway reads
// (its -config and -keyring made absolute, the environment variables that
// located it), and how the running gateway then takes the new password.
func credentialFix(cfg *Config, keyringFlag, entry string) string {
	loc := locateKeyring(cfg, keyringFlag)
	if loc.serviceCopy() {
		return fmt.Sprintf("store the broker's password for this user under %q in the keyring the service's LoadCredential= copies "+
			"(not the copy in %s; see docs/production.md), then restart the service: a reload reads the same copy; or fix the user on the broker",
			entry, os.Getenv("CREDENTIALS_DIRECTORY"))
	}
	var words []string
	if loc.pathFrom == "WSBRIDGE_KEYRING" {
		words = append(words, "WSBRIDGE_KEYRING="+shellQuote(absPath(loc.path)))
	}
	if loc.keyEnv == "" && loc.keyFrom == "WSBRIDGE_KEYRING_KEY_FILE" {
		words = append(words, "WSBRIDGE_KEYRING_KEY_FILE="+shellQuote(absPath(loc.keyFile)))
	}
	words = append(words, "wsbridge", "keyring", "set", shellQuote(entry), "-username", "USER", "-password-stdin")
	if cfg.file != "" {
		words = append(words, "-config", shellQuote(absPath(cfg.file)))
	}
	if keyringFlag != "" {
		words = append(words, "-keyring", shellQuote(absPath(keyringFlag)))
	}
	fix := fmt.Sprintf("store the broker's password for this user with `%s`", strings.Join(words, " "))
	if loc.keyEnv != "" {
		fix += " (with WSBRIDGE_KEYRING_KEY set as the gateway has it)"
	}
	return fix + fmt.Sprintf(", then reload the gateway: kill -HUP %d (new broker connections log in with it); or fix the user on the broker", os.Getpid())
}

// absPath is path made absolute, for a command run from another
// directory; path itself if that fails.
func absPath(path string) string {
	if a, err := filepath.Abs(path); err == nil {
		return a
	}
	return path
}

// keySource says where the master key was looked for.
func (l keyringLocation) keySource() string {
	if l.keyEnv != "" {
		return "WSBRIDGE_KEYRING_KEY"
	}
	return fmt.Sprintf("key file %s (%s)", l.keyFile, l.keyFrom)
}

func (l keyringLocation) key() (keyring.Key, error) {
	if l.keyEnv != "" {
		k, err := keyring.ParseKey(l.keyEnv)
		if err != nil {
			return k, fmt.Errorf("keyring: WSBRIDGE_KEYRING_KEY: %s", strings.TrimPrefix(err.Error(), "keyring: "))
		}
		return k, nil
	}
	k, err := keyring.LoadKeyFile(l.keyFile)
	if ae := accessError("master key file", l.keyFile, l.keyFrom, false, err); ae != nil {
		return k, ae
	}
	return k, err
}

// need is a keyring entry that something in the config needs.
type need struct {
	who   string // backend "rabbitmq", auth policy "demo"
	entry string
}

func (n need) String() string { return fmt.Sprintf("%s needs entry %q", n.who, n.entry) }

// keyringNeeds lists the entries the config names: each backend's
// credential and each auth policy's fixed one. A template (user/{sub})
// names entries per identity, which only logins can look up.
func (cfg *Config) keyringNeeds() []need {
	var needs []need
	for _, name := range sortedKeys(cfg.Backends) {
		if c := cfg.Backends[name].Credential; c != "" {
			needs = append(needs, need{fmt.Sprintf("backend %q", name), c})
		}
	}
	for _, name := range sortedKeys(cfg.Auth) {
		if c := cfg.Auth[name].Credential; c != "" && !strings.Contains(c, "{") {
			needs = append(needs, need{fmt.Sprintf("auth policy %q", name), c})
		}
	}
	return needs
}

func needsText(needs []need) string {
	s := make([]string, len(needs))
	for i, n := range needs {
		s[i] = n.String()
	}
	return strings.Join(s, "; ")
}

// open opens the keyring. Its errors name the keyring, where its path came
// from, what in the config needs it (needs) and the commands to run.
func (l keyringLocation) open(needs []need) (*keyring.Keyring, error) {
	because := ""
	if len(needs) > 0 {
		because = " (" + needsText(needs) + ")"
	}
	_, statErr := os.Stat(l.path)
	exists := !errors.Is(statErr, fs.ErrNotExist)
	key, err := l.key()
	switch {
	case errors.Is(err, keyring.ErrNoKey) && !exists:
		return nil, fmt.Errorf("no keyring: neither keyring %s (%s) nor its master key file %s (%s) exists%s.\nCreate both, then store each entry:\n  %s\n%s",
			l.path, l.pathFrom, l.keyFile, l.keyFrom, because, l.command("init"), l.setCommands(needs))
	case errors.Is(err, keyring.ErrNoKey):
		return nil, fmt.Errorf("keyring %s (%s): no master key: key file %s (%s) does not exist%s.\n"+
			"Give the key this keyring was created with: restore that file, or set WSBRIDGE_KEYRING_KEY_FILE or WSBRIDGE_KEYRING_KEY",
			l.path, l.pathFrom, l.keyFile, l.keyFrom, because)
	case errors.Is(err, fs.ErrPermission): // accessError said it all
		return nil, err
	case err != nil:
		return nil, fmt.Errorf("%w (the master key of keyring %s)", err, l.path)
	}
	kr, err := keyring.Open(l.path, key)
	if ae := accessError("keyring", l.path, l.pathFrom, false, err); ae != nil {
		return nil, ae
	}
	switch {
	case errors.Is(err, keyring.ErrNotFound):
		return nil, fmt.Errorf("keyring %s (%s) does not exist%s.\nCreate it, then store each entry:\n  %s\n%s",
			l.path, l.pathFrom, because, l.command("init"), l.setCommands(needs))
	case errors.Is(err, keyring.ErrWrongKey):
		return nil, fmt.Errorf("keyring %s (%s): the master key from %s does not open it: give the key it was created with",
			l.path, l.pathFrom, l.keySource())
	}
	return kr, err
}

// setCommands are the commands that store needs, or a template of one.
func (l keyringLocation) setCommands(needs []need) string {
	if len(needs) == 0 {
		return "  " + l.command("set", "NAME", "-username", "USER")
	}
	seen := map[string]bool{}
	var b strings.Builder
	for _, n := range needs {
		if !seen[n.entry] {
			seen[n.entry] = true
			fmt.Fprintf(&b, "  %s\n", l.command("set", n.entry, "-username", "USER"))
		}
	}
	return strings.TrimSuffix(b.String(), "\n")
}

// missing reports every need kr lacks, with the commands that store them.
func (l keyringLocation) missing(kr *keyring.Keyring, needs []need) error {
	var lack []need
	for _, n := range needs {
		if _, err := kr.Get(n.entry); errors.Is(err, keyring.ErrNoEntry) {
			lack = append(lack, n)
		}
	}
	if len(lack) == 0 {
		return nil
	}
	return fmt.Errorf("keyring %s (%s) lacks what the config names: %s.\nStore what is missing:\n%s",
		l.path, l.pathFrom, needsText(lack), l.setCommands(lack))
}

// keyFileWarning says when the master key file may be read by others than
// its owner (who runs the gateway): whoever reads it reads every broker
// password in the keyring.
func (l keyringLocation) keyFileWarning() string {
	if l.keyEnv != "" || runtime.GOOS == "windows" {
		return ""
	}
	st, err := os.Stat(l.keyFile)
	if err != nil || st.Mode().Perm()&0o077 == 0 {
		return ""
	}
	return fmt.Sprintf("keyring master key file %s is open to group or others (mode %04o), and whoever reads it reads every broker password in the keyring: run chmod 600 %s",
		l.keyFile, st.Mode().Perm(), shellQuote(l.keyFile))
}

// openKeyring opens the keyring the config needs and checks that it holds
// every entry the config names.
func openKeyring(cfg *Config, flagPath string) (*keyring.Keyring, error) {
	loc := locateKeyring(cfg, flagPath)
	needs := cfg.keyringNeeds()
	kr, err := loc.open(needs)
	if err != nil {
		return nil, err
	}
	if err := loc.missing(kr, needs); err != nil {
		return nil, err
	}
	return kr, nil
}
