package validate

import "fmt"

// MaxTopicBytes bounds a topic name: NATS, AMQP routing keys (255) and MQTT
// all accept this much.
const MaxTopicBytes = 255

// Topic checks a broker-neutral topic name as clients write it in URLs:
// dot-separated words of letters, digits, '_' and '-', such as
// "prices.eur". Each backend maps dots to its own separator, so the
// characters that are wildcards or separators somewhere ('*', '>', '#',
// '+', '/') and control characters are refused everywhere.
func Topic(t string) error {
	if t == "" {
		return fmt.Errorf("topic: empty: %w", ErrMalformed)
	}
	if len(t) > MaxTopicBytes {
		return fmt.Errorf("topic: longer than %d bytes: %w", MaxTopicBytes, ErrTooLarge)
	}
	word := 0
	for i := 0; i < len(t); i++ {
		c := t[i]
		switch {
		case c == '.':
			if word == 0 {
				return fmt.Errorf("topic %q: empty word (leading, trailing or doubled dot): %w", t, ErrMalformed)
			}
			word = 0
			continue
		case c == '*' || c == '>' || c == '#' || c == '+':
			return fmt.Errorf("topic %q: wildcard %q not allowed: %w", t, c, ErrMalformed)
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_', c == '-':
		default:
			return fmt.Errorf("topic %q: character %q not allowed (use letters, digits, '_', '-' and '.'): %w", clip([]byte(t)), c, ErrMalformed)
		}
		word++
	}
	if word == 0 {
		return fmt.Errorf("topic %q: empty word (leading, trailing or doubled dot): %w", t, ErrMalformed)
	}
	return nil
}
