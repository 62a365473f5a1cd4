package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strings"

	"golang.org/x/term"
)

// maxPasswordBytes bounds a password read from a pipe: no broker or hash
// takes one near this long, and a line without an end stops here.
const maxPasswordBytes = 4096

// terminalFd returns stdin's descriptor when stdin is a terminal: the
// seam between typed passwords (prompted, echo off) and piped ones.
func terminalFd(stdin io.Reader) (int, bool) {
	f, ok := stdin.(interface{ Fd() uintptr })
	if !ok {
		return 0, false
	}
	fd := int(f.Fd())
	return fd, term.IsTerminal(fd)
}

// readPassword reads a password. At a terminal it prompts on prompt (the
// terminal's other stream, so that stdout stays clean for what the command
// prints) and reads with echo off, asking twice when confirm is set: a
// typo nobody saw would otherwise be stored. From a pipe it reads one line.
func readPassword(stdin io.Reader, prompt io.Writer, label string, confirm bool) (string, error) {
	fd, tty := terminalFd(stdin)
	if !tty {
		return readPasswordLine(stdin)
	}
	pw, err := promptPassword(fd, prompt, label+": ")
	if err != nil {
		return "", err
	}
	if confirm {
		again, err := promptPassword(fd, prompt, "Again: ")
		if err != nil {
			return "", err
		}
		if again != pw {
			return "", errors.New("the two passwords differ")
		}
	}
	return pw, nil
}

func promptPassword(fd int, prompt io.Writer, text string) (string, error) {
	fmt.Fprint(prompt, text)
	b, err := term.ReadPassword(fd)
	fmt.Fprintln(prompt) // the Enter that ended the line was not echoed
	if err != nil {
		return "", fmt.Errorf("reading the password: %w", err)
	}
	if len(b) == 0 {
		return "", errors.New("empty password")
	}
	return string(b), nil
}

// readPasswordLine reads one line from a pipe, without its line end.
func readPasswordLine(r io.Reader) (string, error) {
	line, err := bufio.NewReader(io.LimitReader(r, maxPasswordBytes+2)).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("reading the password: %w", err)
	}
	line = strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r")
	switch {
	case line == "":
		return "", errors.New("empty password on standard input")
	case len(line) > maxPasswordBytes:
		return "", fmt.Errorf("the password on standard input is longer than %d bytes", maxPasswordBytes)
	}
	return line, nil
}
