package brokertest

import (
	"bytes"
	"io"
	"net"
	"sync"
	"testing"
)

// TapProxy is a TCP hop between the gateway and the real broker. It keeps a
// copy of every byte that reached the broker and can cut connections, as a
// broker crash or network failure would.
type TapProxy struct {
	ln     net.Listener
	target string

	mu     sync.Mutex
	toBkr  bytes.Buffer
	conns  []net.Conn
	ports  []int // local ports of the proxy's broker-side connections
	wg     sync.WaitGroup
	closed bool
}

func NewTapProxy(t testing.TB, target string) *TapProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &TapProxy{ln: ln, target: target}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.Close)
	return p
}

func (p *TapProxy) Addr() string { return p.ln.Addr().String() }

func (p *TapProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		b, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, b)
		p.ports = append(p.ports, b.LocalAddr().(*net.TCPAddr).Port)
		p.mu.Unlock()
		p.wg.Add(2)
		go func() {
			defer p.wg.Done()
			io.Copy(b, io.TeeReader(c, lockedWriter{&p.mu, &p.toBkr}))
			b.Close()
		}()
		go func() {
			defer p.wg.Done()
			io.Copy(c, b)
			c.Close()
		}()
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// Sent is everything that reached the broker so far.
func (p *TapProxy) Sent() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.toBkr.String()
}

// Cut drops every proxied connection.
func (p *TapProxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
}

// Close stops the proxy and waits until every byte it took has passed.
func (p *TapProxy) Close() {
	p.ln.Close()
	p.Cut()
	p.wg.Wait()
}

// Ports are the local ports of the proxy's broker-side connections, as
// the broker sees them.
func (p *TapProxy) Ports() []int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]int(nil), p.ports...)
}
