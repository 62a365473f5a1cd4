package validate

import "strconv"

// AppendSTOMPHeader appends one header line, "name:value\n", with value
// escaped as version v requires: 1.1 and 1.2 escape backslash, line
// feed, carriage return and colon; 1.0 has no escapes, so a line break
// there becomes a space (it would end the header). name is the
// gateway's own and is not escaped.
func AppendSTOMPHeader(b []byte, v STOMPVersion, name, value string) []byte {
	b = append(b, name...)
	b = append(b, ':')
	for i := 0; i < len(value); i++ {
		c := value[i]
		switch {
		case c != '\\' && c != '\n' && c != '\r' && c != ':':
			b = append(b, c)
		case v < STOMP11 && (c == '\n' || c == '\r'):
			b = append(b, ' ')
		case v < STOMP11:
			b = append(b, c)
		case c == '\\':
			b = append(b, '\\', '\\')
		case c == '\n':
			b = append(b, '\\', 'n')
		case c == '\r':
			b = append(b, '\\', 'r')
		default:
			b = append(b, '\\', 'c')
		}
	}
	return append(b, '\n')
}

// AppendSTOMPError appends an ERROR frame for version v: a message
// header carrying msg, a receipt-id when receipt is not nil (as the
// client sent it, already escaped), and detail as a text/plain body.
func AppendSTOMPError(b []byte, v STOMPVersion, msg, detail string, receipt []byte) []byte {
	b = append(b, "ERROR\n"...)
	b = AppendSTOMPHeader(b, v, "message", msg)
	if receipt != nil {
		b = append(b, "receipt-id:"...)
		b = append(b, receipt...)
		b = append(b, '\n')
	}
	b = append(b, "content-type:text/plain\ncontent-length:"...)
	b = strconv.AppendInt(b, int64(len(detail)), 10)
	b = append(b, "\n\n"...)
	b = append(b, detail...)
	return append(b, 0)
}
