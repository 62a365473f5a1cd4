package bridge

import (
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/wsbridge/wsbridge/front"
)

// refuse answers a WebSocket client refused for load with an upgrade and,
// in the same write, close 1013 (try again later) carrying the hint. A
// browser's WebSocket API never sees an HTTP status: a 429 or 503 reaches
// the page as 1006, which looks like a network fault, while 1013 and its
// reason say when to come back. The refusal costs what the request has
// already cost plus one write, and a lingering close while Conns has a
// place for one (TakeRefusal). A request that is not a WebSocket upgrade
// this route could accept gets front.RefuseHTTP.
func (u *Upgraders) refuse(w http.ResponseWriter, r *http.Request, b front.Busy, conns *front.Conns) {
	key := r.Header.Get("Sec-Websocket-Key")
	proto, ok := u.subprotocol(r.Header.Values("Sec-Websocket-Protocol"))
	hj, canHijack := w.(http.Hijacker)
	if !ok || !canHijack || key == "" || r.Method != http.MethodGet || !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
		front.RefuseHTTP(w, b)
		return
	}
	nc, _, err := hj.Hijack()
	if err != nil {
		return
	}
	sum := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11")) // RFC 6455 section 4.2.2
	out := fmt.Appendf(nil, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n",
		base64.StdEncoding.EncodeToString(sum[:]))
	if proto != "" { // a browser that offered subprotocols fails an answer naming none
		out = fmt.Appendf(out, "Sec-WebSocket-Protocol: %s\r\n", proto)
	}
	reason := b.CloseReason()
	out = append(out, "\r\n"...)
	out = append(out, 0x88, byte(2+len(reason))) // FIN, close; unmasked, < 126 bytes
	out = binary.BigEndian.AppendUint16(out, CloseTryAgainLater)
	out = append(out, reason...)
	if d := u.opts.HandshakeTimeout; d > 0 {
		nc.SetWriteDeadline(time.Now().Add(d))
	}
	linger := conns.TakeRefusal()
	if linger {
		defer conns.GiveRefusal()
	}
	wc := &wsConn{Conn: nc, linger: u.opts.Linger} // drained within the process's linger budget
	if _, err := nc.Write(out); err != nil || !linger {
		wc.closeSocket()
		return
	}
	// A client may already be sending (its login, as it opens): closing
	// now would reset the socket and could lose the close frame.
	wc.Close()
	wc.drain()
}
