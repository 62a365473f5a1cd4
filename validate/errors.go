// Package validate parses and checks client wire formats before anything is
// forwarded to a broker, and encodes the gateway's own answers in them
// (STOMP ERROR, MQTT CONNACK/DISCONNECT/SUBACK, AMQP connection.close...),
// beside each protocol's scanner (the *answers.go files): what a legal
// frame looks like is known in one place. It does no I/O, starts no
// goroutines and keeps no globals: every limit is a parameter.
package validate

import "errors"

// Classes of violation. A caller branches on them with errors.Is to choose
// the protocol answer and the WebSocket close code.
var (
	// ErrMalformed: the bytes break the protocol grammar (close 1002).
	ErrMalformed = errors.New("malformed")
	// ErrTooLarge: a size limit was exceeded (close 1009).
	ErrTooLarge = errors.New("too large")
	// ErrPolicy: well formed, but not allowed here (close 1008).
	ErrPolicy = errors.New("not allowed")
)
