package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/wsbridge/wsbridge/keyring"
)

// keyringCommand runs `wsbridge keyring init|set|list|delete`.
func keyringCommand(args []string, stdin io.Reader, stdout io.Writer) error {
	if len(args) == 0 {
		return errors.New("keyring: want init, set, list or delete")
	}
	sub, args := args[0], args[1:]
	fs := flag.NewFlagSet("keyring "+sub, flag.ContinueOnError)
	fs.SetOutput(stdout)
	var cf commonFlags
	cf.register(fs)
	username := fs.String("username", "", "username to store (set)")
	pwStdin := fs.Bool("password-stdin", false, "read the password from standard input (set)")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	cfg, err := loadConfig(cf.config)
	if err != nil {
		return err
	}
	loc := locateKeyring(cfg, cf.keyring)
	wantArgs := map[string]int{"init": 0, "list": 0, "set": 1, "delete": 1}
	n, ok := wantArgs[sub]
	if !ok {
		return fmt.Errorf("keyring: unknown subcommand %q (want init, set, list or delete)", sub)
	}
	if len(pos) != n {
		return fmt.Errorf("keyring %s: want %d argument(s), got %d", sub, n, len(pos))
	}

	if sub == "init" {
		return keyringInit(loc, stdout)
	}
	key, err := loc.key()
	if err != nil {
		return err
	}
	kr, err := keyring.Open(loc.path, key)
	if err != nil {
		return err
	}
	switch sub {
	case "list":
		for _, name := range kr.Names() {
			c, _ := kr.Get(name)
			fmt.Fprintf(stdout, "%s\t%s\n", name, c.Username)
		}
		return nil
	case "delete":
		if err := kr.Delete(pos[0]); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "deleted %s from %s\n", pos[0], loc.path)
		return nil
	}
	// set
	if !*pwStdin {
		return errors.New("keyring set: pass -password-stdin and the password on standard input (never on the command line)")
	}
	if *username == "" {
		return errors.New("keyring set: -username is required")
	}
	pw, err := readSecretLine(stdin)
	if err != nil {
		return err
	}
	if err := kr.Set(pos[0], keyring.Credential{Username: *username, Password: keyring.NewSecret(pw)}); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "stored %s (username %s) in %s\n", pos[0], *username, loc.path)
	return nil
}

func keyringInit(loc keyringLocation, stdout io.Writer) error {
	var key keyring.Key
	var err error
	generated := false
	if loc.keyEnv == "" {
		if _, statErr := os.Stat(loc.keyFile); errors.Is(statErr, os.ErrNotExist) {
			if key, err = keyring.GenerateKeyFile(loc.keyFile); err != nil {
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
		return err
	}
	fmt.Fprintf(stdout, "created empty keyring %s\n", loc.path)
	if generated {
		fmt.Fprintf(stdout, "generated its master key in %s (mode 0600); keep it secret and back it up:\n"+
			"without it the keyring cannot be opened\n", loc.keyFile)
	}
	return nil
}

// readSecretLine reads one line (the password) from r, without its line end.
func readSecretLine(r io.Reader) (string, error) {
	line, err := bufio.NewReaderSize(r, 4096).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("keyring set: reading the password: %w", err)
	}
	line = strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r")
	if line == "" {
		return "", errors.New("keyring set: empty password on standard input")
	}
	return line, nil
}
