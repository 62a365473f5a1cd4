package brokertest

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/wsbridge/wsbridge/bridge"
)

// Serve runs srv on a loopback port until the test ends, then shuts it
// down (sessions first) and waits. It returns host:port.
func Serve(t testing.TB, srv *bridge.Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		<-done
	})
	return ln.Addr().String()
}
