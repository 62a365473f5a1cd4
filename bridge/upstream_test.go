package bridge

import (
	"bytes"
	"errors"
	"io"
	"net"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// listenPeer accepts connections on loopback and hands them to the test.
func listenPeer(t *testing.T) (addr string, accepted <-chan net.Conn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	ch := make(chan net.Conn, 1024)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
			ch <- c
		}
	}()
	return l.Addr().String(), ch
}

func dialPeer(t *testing.T, addr string, accepted <-chan net.Conn) (*Upstream, net.Conn) {
	t.Helper()
	u, err := DialUpstream(&net.Dialer{Timeout: 5 * time.Second}, addr, nil, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case peer := <-accepted:
		return u, peer
	case <-time.After(5 * time.Second):
		t.Fatal("not accepted")
	}
	return nil, nil
}

// Units arrive split across reads, several in one read, and larger than
// the read buffer: consume sees each whole, in order, and a closing peer
// ends the loop with io.EOF.
func TestUpstreamReadLoopReassemblesUnits(t *testing.T) {
	addr, accepted := listenPeer(t)
	u, peer := dialPeer(t, addr, accepted)
	defer u.Close()
	big := bytes.Repeat([]byte("x"), 3*upstreamReadBytes)
	units := [][]byte{[]byte("a"), []byte("bb"), big, []byte("ccc"), big[:upstreamReadBytes], []byte("d")}
	var got [][]byte
	done := make(chan error, 1)
	go func() {
		// A unit is its bytes up to and including a 0 byte.
		done <- u.ReadLoop(4*upstreamReadBytes, func(b []byte) (int, bool) {
			used := 0
			for {
				i := bytes.IndexByte(b[used:], 0)
				if i < 0 {
					return used, true
				}
				got = append(got, bytes.Clone(b[used:used+i]))
				used += i + 1
			}
		})
	}()
	var stream []byte
	for _, unit := range units {
		stream = append(append(stream, unit...), 0)
	}
	// Written in pieces that cut units anywhere, with pauses so that the
	// reader sees them apart and waits idle in between.
	for _, cut := range [][2]int{{0, 1}, {1, 3}, {3, 5000}, {5000, 5000 + 2*upstreamReadBytes}, {5000 + 2*upstreamReadBytes, len(stream)}} {
		if _, err := peer.Write(stream[cut[0]:cut[1]]); err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Millisecond) // lets the reader drain; not a synchronisation
	}
	peer.Close()
	select {
	case err := <-done:
		if !errors.Is(err, io.EOF) {
			t.Fatalf("ReadLoop ended with %v, want EOF", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ReadLoop did not end when the peer closed")
	}
	if len(got) != len(units) {
		t.Fatalf("%d units, want %d", len(got), len(units))
	}
	for i := range units {
		if !bytes.Equal(got[i], units[i]) {
			t.Fatalf("unit %d: %d bytes %.8q, want %d bytes", i, len(got[i]), got[i], len(units[i]))
		}
	}
}

// Close ends a loop that is waiting idle for its broker.
func TestUpstreamCloseEndsAnIdleReadLoop(t *testing.T) {
	addr, accepted := listenPeer(t)
	u, _ := dialPeer(t, addr, accepted)
	done := make(chan error, 1)
	go func() { done <- u.ReadLoop(1024, func(b []byte) (int, bool) { return len(b), true }) }()
	u.Close() // waits for the loop
	if err := <-done; err == nil {
		t.Fatal("an idle loop closed under it returned nil")
	}
}

// A broker that resets the connection ends an idle loop with the reset,
// named as a read on that connection.
func TestUpstreamResetEndsAnIdleReadLoop(t *testing.T) {
	addr, accepted := listenPeer(t)
	u, peer := dialPeer(t, addr, accepted)
	defer u.Close()
	done := make(chan error, 1)
	go func() { done <- u.ReadLoop(1024, func(b []byte) (int, bool) { return len(b), true }) }()
	peer.(*net.TCPConn).SetLinger(0) // close with RST
	peer.Close()
	select {
	case err := <-done:
		if !errors.Is(err, syscall.ECONNRESET) || !strings.Contains(err.Error(), "read tcp 127.0.0.1:") {
			t.Fatalf("ReadLoop ended with %v, want a read error with the reset", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ReadLoop did not end when the peer reset")
	}
}

// An upstream waiting for its broker with nothing pending holds no read
// buffer (idle relayed connections are most of a gateway's, and 4 KiB each
// would be about a fifth of one's memory); one waiting for the rest of a
// unit keeps what it has. Measured as heap per connection, idle against
// pending, so that what both cost alike cancels out.
func TestIdleUpstreamsHoldNoReadBuffer(t *testing.T) {
	const n = 300
	addr, accepted := listenPeer(t)
	heap := func() int64 {
		// Two GCs: the first moves the read buffer pool to its victim
		// cache, the second frees it.
		runtime.GC()
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return int64(m.HeapAlloc)
	}
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait)
	// open starts n upstreams that each read once and then wait; unit
	// says how much of what arrived they use.
	open := func(unit func([]byte) int) int64 {
		read := make(chan struct{}, n)
		before := heap()
		for range n {
			u, peer := dialPeer(t, addr, accepted)
			t.Cleanup(u.Close)
			wg.Add(1)
			go func() {
				defer wg.Done()
				u.ReadLoop(1024, func(b []byte) (int, bool) { read <- struct{}{}; return unit(b), true })
			}()
			if _, err := peer.Write([]byte("hello")); err != nil {
				t.Fatal(err)
			}
		}
		for range n {
			<-read
		}
		return (heap() - before) / n
	}
	idle := open(func(b []byte) int { return len(b) })
	pending := open(func([]byte) int { return 0 }) // never a whole unit
	t.Logf("heap per upstream and its peer: %d bytes idle, %d with a unit pending", idle, pending)
	if pending-idle < upstreamReadBytes*3/4 {
		t.Fatalf("idle upstreams cost %d bytes each, only %d less than ones holding a buffer", idle, pending-idle)
	}
}

// BenchmarkUpstreamReadLoop reads 128-byte units a peer writes one per
// write: reads and waits on the hot path allocate nothing.
func BenchmarkUpstreamReadLoop(b *testing.B) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		unit := append(bytes.Repeat([]byte("m"), 127), 0)
		for range b.N {
			if _, err := c.Write(unit); err != nil {
				return
			}
		}
	}()
	u, err := DialUpstream(&net.Dialer{}, l.Addr().String(), nil, 5*time.Second)
	if err != nil {
		b.Fatal(err)
	}
	defer u.Close()
	b.ReportAllocs()
	b.ResetTimer()
	units := 0
	u.ReadLoop(1024, func(p []byte) (int, bool) {
		whole := bytes.LastIndexByte(p, 0) + 1
		units += bytes.Count(p[:whole], []byte{0})
		return whole, units < b.N
	})
	b.ReportMetric(float64(units)/b.Elapsed().Seconds(), "units/s")
}
