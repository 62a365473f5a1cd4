package bridge

import (
	"errors"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/lxzan/gws"
)

// panicky is an adapter session whose message handling panics.
type panicky struct {
	Session
	closed chan struct{}
}

func (p *panicky) GoAway(string)    {}
func (p *panicky) OnMessage([]byte) { panic("adapter bug") }
func (p *panicky) OnClose(error)    { p.Ended(nil, "client_closed"); close(p.closed) }
func (p *panicky) Begin(ws *gws.Conn, remote string, release func()) {
	p.Start(ws, remote, release, DefaultWSOptions(), func() {})
}

type probe struct {
	gws.BuiltinEventHandler
	closed chan error
}

func (p *probe) OnClose(_ *gws.Conn, err error) { p.closed <- err }

// A panic in one session's handler closes that connection with 1011 and
// leaves the process serving.
func TestHandlerRecoversFromPanics(t *testing.T) {
	sess := &panicky{closed: make(chan struct{})}
	ups := NewUpgraders(Handler{}, DefaultWSOptions(), nil, func() gws.SessionStorage { return sess })
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := ups.Upgrade(w, r)
		if err != nil {
			return
		}
		sess.Begin(ws, r.RemoteAddr, func() {})
		go ws.ReadLoop()
	})}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	p := &probe{closed: make(chan error, 1)}
	c, _, err := gws.NewClient(p, &gws.ClientOption{Addr: "ws://" + ln.Addr().String()})
	if err != nil {
		t.Fatal(err)
	}
	go c.ReadLoop()
	c.WriteString("boom")
	select {
	case err := <-p.closed:
		var ce *gws.CloseError
		if !errors.As(err, &ce) || ce.Code != CloseInternal {
			t.Fatalf("closed with %v, want 1011", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("connection not closed after the panic")
	}
	<-sess.closed
}
