package sse

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// rawStream opens a stream on a bare TCP connection and returns it after
// the response headers, so that a benchmark's clients cost little next to
// the gateway.
func rawStream(tb testing.TB, base, path string) (net.Conn, *bufio.Reader) {
	tb.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		tb.Fatal(err)
	}
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: bench\r\n\r\n", path)
	r := bufio.NewReaderSize(c, 32<<10)
	resp, err := http.ReadResponse(r, nil)
	if err != nil || resp.StatusCode != 200 {
		tb.Fatalf("stream: %v %v", err, resp)
	}
	return c, r
}

// streamBody opens a stream as rawStream does and returns its body,
// without the chunked framing.
func streamBody(tb testing.TB, base, path string) (net.Conn, io.Reader) {
	tb.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		tb.Fatal(err)
	}
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: bench\r\n\r\n", path)
	resp, err := http.ReadResponse(bufio.NewReaderSize(c, 32<<10), nil)
	if err != nil || resp.StatusCode != 200 {
		tb.Fatalf("stream: %v %v", err, resp)
	}
	return c, resp.Body
}

// BenchmarkFanout1000 publishes b.N events on one topic followed by 1,000
// streams and reports deliveries per second: events x clients / time until
// every client has every event.
func BenchmarkFanout1000(b *testing.B) {
	const clients = 1000
	s := startHub(b, natsBroker(b), Options{ClientQueue: 4096, Replay: 16})
	topic := uniqueTopic(b)
	var wg sync.WaitGroup
	conns := make([]net.Conn, clients)
	for i := range clients {
		c, r := streamBody(b, s.url, "/sse/"+topic)
		conns[i] = c
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Count events by their "id: " fields, across reads of the
			// body without its chunk headers (one may stand anywhere in an
			// event, "id: " included, where a write filled the server's
			// buffer): the last 3 bytes of each read are kept in front of
			// the next.
			need, seen, buf, kept := b.N, 0, make([]byte, 3+32<<10), 0
			for seen < need {
				n, err := r.Read(buf[kept:])
				if err != nil {
					return
				}
				n += kept
				seen += bytes.Count(buf[:n], []byte("id: "))
				kept = copy(buf, buf[max(0, n-3):n])
			}
		}()
	}
	body := strings.Repeat("x", 100)
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		if err := s.hub.broker.Publish(b.Context(), brokerMessage(topic, body)); err != nil {
			b.Fatal(err)
		}
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N*clients)/elapsed.Seconds(), "deliveries/s")
	for _, c := range conns {
		c.Close()
	}
}

// BenchmarkIdleStreamMemory reports the gateway's heap and stack per open,
// idle SSE stream (the client side here is a bare socket that reads
// nothing after the headers).
func BenchmarkIdleStreamMemory(b *testing.B) {
	const clients = 1000
	s := startHub(b, natsBroker(b), Options{})
	topic := uniqueTopic(b)
	for range b.N {
		before := heapAndStacks()
		conns := make([]net.Conn, clients)
		for i := range conns {
			conns[i], _ = rawStream(b, s.url, "/sse/"+topic)
		}
		after := heapAndStacks()
		b.ReportMetric(float64(after-before)/clients, "bytes/stream")
		for _, c := range conns {
			c.Close()
		}
	}
}

func heapAndStacks() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse + m.StackInuse
}
