package bridge

import (
	"crypto/tls"
	"net"
	"time"
)

// upstreamReadBytes is an upstream's initial read buffer; it grows for a
// large frame up to the caller's limit and shrinks back once drained.
const upstreamReadBytes = 4 << 10

// Upstream is a relay session's TCP connection to its broker.
type Upstream struct {
	conn         net.Conn
	writeTimeout time.Duration
	done         chan struct{}
}

// DialUpstream connects to a broker, over TLS when tlsConf is set (the
// handshake is bounded by the dialer's timeout too).
func DialUpstream(d *net.Dialer, addr string, tlsConf *tls.Config, writeTimeout time.Duration) (*Upstream, error) {
	var c net.Conn
	var err error
	if tlsConf != nil {
		c, err = (&tls.Dialer{NetDialer: d, Config: tlsConf}).Dial("tcp", addr)
	} else {
		c, err = d.Dial("tcp", addr)
	}
	if err != nil {
		return nil, err
	}
	return &Upstream{conn: c, writeTimeout: writeTimeout, done: make(chan struct{})}, nil
}

// Write sends checked client bytes, bounded by the write timeout.
func (u *Upstream) Write(b []byte) error {
	u.conn.SetWriteDeadline(time.Now().Add(u.writeTimeout))
	_, err := u.conn.Write(b)
	return err
}

// LocalPort is the connection's local port, as the broker sees it.
func (u *Upstream) LocalPort() int { return u.conn.LocalAddr().(*net.TCPAddr).Port }

// ReadLoop reads broker bytes until the connection fails and hands them
// to consume, which sends the complete units it finds and returns how many
// bytes it used, or false to stop. Unused bytes stay for the next read; the
// buffer grows to max plus one read when a unit needs it. ReadLoop returns
// the read error (nil when consume stopped it); Close waits for it.
func (u *Upstream) ReadLoop(max int, consume func(b []byte) (used int, ok bool)) error {
	defer close(u.done)
	buf := make([]byte, upstreamReadBytes)
	filled := 0
	for {
		if filled == len(buf) {
			nb := make([]byte, min(2*len(buf), max+upstreamReadBytes))
			copy(nb, buf[:filled])
			buf = nb
		}
		n, rerr := u.conn.Read(buf[filled:])
		filled += n
		used, ok := consume(buf[:filled])
		if !ok {
			return nil
		}
		filled = copy(buf, buf[used:filled])
		if filled == 0 && len(buf) > upstreamReadBytes {
			buf = make([]byte, upstreamReadBytes)
		}
		if rerr != nil {
			return rerr
		}
	}
}

// Close closes the connection and waits for ReadLoop to return.
func (u *Upstream) Close() {
	u.conn.Close()
	<-u.done
}
