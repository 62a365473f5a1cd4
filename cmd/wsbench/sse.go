package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// fanoutOptions configure the sse-fanout scenario: Clients SSE streams on
// one topic, messages published over HTTP at Rate.
type fanoutOptions struct {
	Base, SSEPath, PublishPath, Topic, Label string
	Clients, Publishers                      int
	Rate                                     float64
	BodyBytes                                int
	Duration, Drain, Warmup                  time.Duration
}

// runSSEFanout opens the streams, waits until each has started, publishes
// for the duration and counts every delivery to every stream.
func runSSEFanout(o fanoutOptions) (*result, error) {
	t := newTally(1, o.Clients, int(o.Rate*o.Duration.Seconds())*o.Clients)
	t.warm = int(o.Warmup.Seconds() * o.Rate)
	var lastDelivery atomic.Int64
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: o.Publishers, DisableCompression: true}}
	started := make(chan error, o.Clients)
	var streams sync.WaitGroup
	shards := make([]*shard, o.Clients)
	for i := range o.Clients {
		sh := &shard{warm: t.warm, latencies: make([]time.Duration, 0, int(o.Rate*o.Duration.Seconds())+16)}
		shards[i] = sh
		streams.Add(1)
		go func() {
			defer streams.Done()
			req, _ := http.NewRequestWithContext(ctx, "GET", o.Base+o.SSEPath+"/"+o.Topic, nil)
			resp, err := client.Do(req)
			if err == nil && resp.StatusCode != http.StatusOK {
				err = fmt.Errorf("stream: %s", resp.Status)
				resp.Body.Close()
			}
			if err != nil {
				started <- err
				return
			}
			defer resp.Body.Close()
			readEvents(resp.Body, started, func(data []byte) {
				now := time.Now()
				p, seq, at, err := parseBody(data)
				if err != nil || p != 0 {
					sh.deliver(-1, 0)
					return
				}
				sh.deliver(seq, now.Sub(time.Unix(0, at)))
				lastDelivery.Store(now.UnixNano())
			})
		}()
	}
	for range o.Clients {
		if err := <-started; err != nil {
			return nil, err
		}
	}

	start := time.Now()
	interval := time.Duration(float64(time.Second) / o.Rate)
	var seqs atomic.Int64
	var pubs sync.WaitGroup
	errs := make(chan error, o.Publishers)
	for range o.Publishers {
		pubs.Add(1)
		go func() {
			defer pubs.Done()
			body := make([]byte, 0, o.BodyBytes+64)
			for {
				seq := int(seqs.Add(1) - 1)
				at := start.Add(time.Duration(seq) * interval)
				if at.After(start.Add(o.Duration)) {
					return
				}
				if d := time.Until(at); d > 0 {
					time.Sleep(d)
				}
				t.published(0, seq)
				body = appendBody(body[:0], 0, seq, at, o.BodyBytes)
				resp, err := client.Post(o.Base+o.PublishPath+"/"+o.Topic, "text/plain", bytes.NewReader(body))
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusAccepted {
						err = fmt.Errorf("publish: %s", resp.Status)
					}
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	pubs.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return nil, err
	}
	want := int64(t.sentTotal())
	deadline := time.Now().Add(o.Drain)
	for time.Now().Before(deadline) {
		done := true
		for _, sh := range shards {
			if sh.n.Load() < want {
				done = false
				break
			}
		}
		if done {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	streams.Wait()
	for _, sh := range shards {
		t.merge(sh)
	}
	r := &result{Label: o.Label, Rate: o.Rate, Scenario: "sse-fanout", Target: o.Base + o.SSEPath + "/" + o.Topic,
		Publishers: o.Publishers, Subscribers: o.Clients, BodyBytes: o.BodyBytes}
	if t.warm > 0 {
		r.WarmupS = o.Warmup.Seconds()
	}
	end := time.Unix(0, lastDelivery.Load())
	if end.Before(start) {
		end = start
	}
	t.finish(r, end.Sub(start))
	return r, nil
}

// readEvents reads an SSE stream, signals started once the first bytes
// (the server's retry hint) arrive, and hands each data line's value to
// onData. Payloads here are single-line.
func readEvents(r io.Reader, started chan<- error, onData func([]byte)) {
	buf := make([]byte, 64<<10)
	filled := 0
	first := true
	for {
		n, err := r.Read(buf[filled:])
		if n > 0 && first {
			started <- nil
			first = false
		}
		filled += n
		off := 0
		for {
			nl := bytes.IndexByte(buf[off:filled], '\n')
			if nl < 0 {
				break
			}
			line := buf[off : off+nl]
			if v, ok := bytes.CutPrefix(line, []byte("data: ")); ok {
				onData(v)
			}
			off += nl + 1
		}
		filled = copy(buf, buf[off:filled])
		if filled == len(buf) { // a line longer than the buffer: not ours
			filled = 0
		}
		if err != nil {
			if first {
				started <- err
			}
			return
		}
	}
}
