package main

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/lxzan/gws"
)

// bareRelay is the in-run ceiling for a relay: WebSocket messages written
// to a TCP connection as they come, TCP reads written back as WebSocket
// messages, no parsing, no validation, no credential injection. Whatever
// wsbridge costs beyond it is wsbridge's own work.
type bareRelay struct {
	target string
	// A gws Upgrader with SubProtocols refuses clients that offer none
	// (AMQP's), so those get the plain one.
	withSub, plain *gws.Upgrader
}

func newBareRelay(target string) *bareRelay {
	r := &bareRelay{target: target}
	opt := func(sub []string) *gws.ServerOption {
		return &gws.ServerOption{ReadBufferSize: 4 << 10, ReadMaxPayloadSize: 1 << 20, SubProtocols: sub}
	}
	r.withSub = gws.NewUpgrader(r, opt([]string{"v12.stomp", "v11.stomp", "v10.stomp", "mqtt"}))
	r.plain = gws.NewUpgrader(r, opt(nil))
	return r
}

func (r *bareRelay) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	u := r.withSub
	if req.Header.Get("Sec-Websocket-Protocol") == "" {
		u = r.plain
	}
	ws, err := u.Upgrade(w, req)
	if err != nil {
		return
	}
	up, err := net.Dial("tcp", r.target)
	if err != nil {
		ws.WriteClose(1011, []byte("target unreachable"))
		return
	}
	ws.Session().Store("up", up)
	op := gws.OpcodeBinary // MQTT, AMQP
	if strings.HasSuffix(ws.SubProtocol(), ".stomp") {
		op = gws.OpcodeText
	}
	go func() { // broker -> client, one message per read
		defer ws.WriteClose(1000, nil)
		buf := make([]byte, 64<<10)
		for {
			n, err := up.Read(buf)
			if n > 0 && ws.WriteMessage(op, buf[:n]) != nil {
				return
			}
			if err != nil {
				return
			}
		}
	}()
	ws.ReadLoop()
}

func (r *bareRelay) OnOpen(*gws.Conn) {}

func (r *bareRelay) OnClose(c *gws.Conn, _ error) {
	if up, ok := c.Session().Load("up"); ok {
		up.(net.Conn).Close()
	}
}

func (r *bareRelay) OnPing(c *gws.Conn, p []byte) { c.WritePong(p) }
func (r *bareRelay) OnPong(*gws.Conn, []byte)     {}

func (r *bareRelay) OnMessage(c *gws.Conn, m *gws.Message) {
	defer m.Close()
	if up, ok := c.Session().Load("up"); ok {
		up.(net.Conn).Write(m.Bytes())
	}
}

// serveBareRelay listens on addr until ctx ends.
func serveBareRelay(ctx context.Context, addr, target string, log *slog.Logger, onListen func(net.Addr)) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: newBareRelay(target), ReadHeaderTimeout: 5 * time.Second}
	log.Info("bare relay listening", "addr", ln.Addr().String(), "target", target)
	if onListen != nil {
		onListen(ln.Addr())
	}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	if err := srv.Serve(ln); err != http.ErrServerClosed {
		return err
	}
	return nil
}
