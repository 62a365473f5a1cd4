package amqp

import (
	"testing"
)

// The hot path: a restricted client publishing again and again to a place
// its rules allow, with the properties a real client sends, decided with
// its header behind it, allocates nothing.
func TestGuardPublishAllocatesNothing(t *testing.T) {
	for _, c := range []struct {
		name string
		call fuzzCall
	}{
		{"plain", fuzzCall{method: basicPublish, strs: []string{"amq.topic", "demo.x"}}},
		{"direct reply-to and headers", fuzzCall{method: basicPublish, strs: []string{"amq.topic", "demo.x"}, props: 1 | 2 | 4,
			replyTo: directReplyTo, headers: []fuzzField{{name: "app", typ: 'S', str: "x"}}, otherProps: "text/plain"}},
		{"named reply-to", fuzzCall{method: basicPublish, strs: []string{"amq.topic", "demo.x"}, props: 1, replyTo: "q.pub"}},
		{"its own queue", fuzzCall{method: basicPublish, strs: []string{"", "amq.gen-mine"}}},
		{"headers on a key-routed exchange", fuzzCall{method: basicPublish, strs: []string{"wide", "k"}, props: 2,
			headers: []fuzzField{{name: "app", typ: 'S', str: "x"}}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			g, s := fuzzGuard(t), fuzzScanner(t)
			mb, hb := c.call.frames()
			pub, _ := scanned(s, mb)
			hdr, _ := scanned(s, hb)
			run := func() {
				if held, err := g.method(&pub, hb); held || err != nil {
					t.Fatalf("held %v, %v", held, err)
				}
				if p, err := g.content(&hdr); p != nil || err != nil {
					t.Fatalf("content: %v", err)
				}
			}
			run() // the first decision fills the caches
			if n := testing.AllocsPerRun(100, run); n != 0 {
				t.Fatalf("%v allocations per publish", n)
			}
		})
	}
}

func BenchmarkGuardPublish(b *testing.B) {
	g, s := fuzzGuard(b), fuzzScanner(b)
	mb, hb := fuzzCall{method: basicPublish, strs: []string{"amq.topic", "demo.x"}, props: 4, otherProps: "text/plain"}.frames()
	pub, _ := scanned(s, mb)
	hdr, _ := scanned(s, hb)
	b.ReportAllocs()
	for b.Loop() {
		g.method(&pub, hb)
		g.content(&hdr)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "publishes/s")
}
