package validate

import "encoding/binary"

// BeginAMQPFrame appends the header of a frame of type typ on channel
// ch with its size left open, and returns where the payload begins: the
// caller appends the payload, then EndAMQPFrame. Frames are so built in
// place, without a payload buffer of their own.
func BeginAMQPFrame(b []byte, typ byte, ch uint16) ([]byte, int) {
	b = binary.BigEndian.AppendUint16(append(b, typ), ch)
	return append(b, 0, 0, 0, 0), len(b) + 4
}

// EndAMQPFrame fills in the size of the frame whose payload began at
// payloadAt (BeginAMQPFrame) and appends the frame end octet.
func EndAMQPFrame(b []byte, payloadAt int) []byte {
	binary.BigEndian.PutUint32(b[payloadAt-4:], uint32(len(b)-payloadAt))
	return append(b, amqpFrameEnd)
}

// AppendAMQPFrame appends a frame of type typ on channel ch carrying
// payload.
func AppendAMQPFrame(b []byte, typ byte, ch uint16, payload []byte) []byte {
	b, at := BeginAMQPFrame(b, typ, ch)
	return EndAMQPFrame(append(b, payload...), at)
}

// AppendAMQPMethod appends a method frame on channel ch: class, method
// and the method's encoded arguments.
func AppendAMQPMethod(b []byte, ch, class, method uint16, args []byte) []byte {
	b, at := BeginAMQPFrame(b, AMQPFrameMethod, ch)
	b = binary.BigEndian.AppendUint16(binary.BigEndian.AppendUint16(b, class), method)
	return EndAMQPFrame(append(b, args...), at)
}

// AppendAMQPShortString appends s as a short string (a length octet, then
// the bytes); s longer than 255 bytes is cut to 255.
func AppendAMQPShortString(b []byte, s string) []byte {
	if len(s) > 255 {
		s = s[:255]
	}
	return append(append(b, byte(len(s))), s...)
}

// AppendAMQPLongString appends s as a long string (a 32-bit length, then
// the bytes).
func AppendAMQPLongString(b []byte, s string) []byte {
	return append(binary.BigEndian.AppendUint32(b, uint32(len(s))), s...)
}

// AppendAMQPConnectionClose appends connection.close on channel 0: reply
// code and text (cut to 255 bytes), and the class and method of the
// method that caused it (0, 0: none).
func AppendAMQPConnectionClose(b []byte, code int, text string, class, method uint16) []byte {
	return appendAMQPClose(b, 0, 10, 50, code, text, class, method)
}

// AppendAMQPConnectionCloseOK appends connection.close-ok on channel 0.
func AppendAMQPConnectionCloseOK(b []byte) []byte {
	return AppendAMQPMethod(b, 0, 10, 51, nil)
}

// AppendAMQPChannelClose appends channel.close on channel ch: reply code
// and text (cut to 255 bytes), and the class and method of the method
// that caused it (0, 0: none).
func AppendAMQPChannelClose(b []byte, ch uint16, code int, text string, class, method uint16) []byte {
	return appendAMQPClose(b, ch, 20, 40, code, text, class, method)
}

func appendAMQPClose(b []byte, ch, closeClass, closeMethod uint16, code int, text string, class, method uint16) []byte {
	b, at := BeginAMQPFrame(b, AMQPFrameMethod, ch)
	b = binary.BigEndian.AppendUint16(binary.BigEndian.AppendUint16(b, closeClass), closeMethod)
	b = binary.BigEndian.AppendUint16(b, uint16(code))
	b = AppendAMQPShortString(b, text)
	b = binary.BigEndian.AppendUint16(binary.BigEndian.AppendUint16(b, class), method)
	return EndAMQPFrame(b, at)
}
