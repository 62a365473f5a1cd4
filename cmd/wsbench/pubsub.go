package main

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// pubsubOptions configure the stomp-pubsub scenario.
type pubsubOptions struct {
	URL, Login, Passcode, VHost string
	Label                       string
	Dest                        string // /topic/... (every subscriber gets each message) or /queue/...
	Exchange                    string // AMQP: the exchange published to and bound
	Publishers, Subscribers     int
	Window                      int     // messages in flight per publisher
	Rate                        float64 // messages per second over all publishers; 0 = as fast as the window allows
	BodyBytes                   int
	Duration, Drain, Warmup     time.Duration
}

// pubsubClient is one connection of a pub/sub scenario, in whichever
// protocol.
type pubsubClient interface {
	subscribe(id int, dest string) error
	// publish sends a message carrying body to dest; buf is scratch space
	// it may reuse and returns.
	publish(buf []byte, dest string, body []byte) ([]byte, error)
	close()
}

// pubsubDialer opens a client whose deliveries go to onMessage.
type pubsubDialer func(onMessage func(body []byte)) (pubsubClient, error)

// runSTOMPPubSub runs the scenario over STOMP.
func runSTOMPPubSub(o pubsubOptions) (*result, error) {
	copies := o.Subscribers
	if strings.HasPrefix(o.Dest, "/queue/") {
		copies = 1 // competing consumers
	}
	return runPubSub("stomp-pubsub", o, copies, func(onMessage func([]byte)) (pubsubClient, error) {
		return dialSTOMP(o.URL, o.Login, o.Passcode, o.VHost, onMessage)
	})
}

// runPubSub runs a pub/sub scenario: subscribers first (each confirmed),
// then publishers at the rate or as fast as their windows allow, then a
// drain; every message should reach copies deliveries.
func runPubSub(scenario string, o pubsubOptions, expect int, dial pubsubDialer) (*result, error) {
	capacity := 1 << 16
	if o.Rate > 0 {
		capacity = int(o.Rate*o.Duration.Seconds()) * expect
	}
	t := newTally(o.Publishers, expect, capacity)
	if o.Rate > 0 {
		t.warm = int(o.Warmup.Seconds() * o.Rate / float64(o.Publishers))
	}
	windows := make([]chan struct{}, o.Publishers)
	for i := range windows {
		windows[i] = make(chan struct{}, o.Window)
	}
	var lastDelivery atomic.Int64
	onMessage := func(body []byte) {
		now := time.Now()
		p, seq, at, err := parseBody(body)
		if err != nil {
			t.deliver(-1, 0, 0)
			return
		}
		if t.deliver(p, seq, now.Sub(time.Unix(0, at))) {
			select {
			case <-windows[p]:
			default:
			}
		}
		lastDelivery.Store(now.UnixNano())
	}

	var conns []pubsubClient
	defer func() {
		for _, c := range conns {
			c.close()
		}
	}()
	for i := range o.Subscribers {
		c, err := dial(onMessage)
		if err != nil {
			return nil, fmt.Errorf("subscriber %d: %w", i, err)
		}
		conns = append(conns, c)
		if err := c.subscribe(i, o.Dest); err != nil {
			return nil, fmt.Errorf("subscriber %d: %w", i, err)
		}
	}
	pubs := make([]pubsubClient, o.Publishers)
	for i := range pubs {
		c, err := dial(func([]byte) {})
		if err != nil {
			return nil, fmt.Errorf("publisher %d: %w", i, err)
		}
		conns = append(conns, c)
		pubs[i] = c
	}

	start := time.Now()
	stop := start.Add(o.Duration)
	var wg sync.WaitGroup
	errs := make(chan error, o.Publishers)
	for p, c := range pubs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var interval time.Duration
			if o.Rate > 0 {
				interval = time.Duration(float64(o.Publishers) / o.Rate * float64(time.Second))
			}
			body := make([]byte, 0, o.BodyBytes+64)
			var buf []byte
			for seq := 0; ; seq++ {
				at := time.Now()
				if interval > 0 {
					// Latency counts from when the message was due, so a
					// stalled sender does not hide its own delay.
					at = start.Add(time.Duration(seq) * interval)
					if d := time.Until(at); d > 0 {
						time.Sleep(d)
					}
				}
				if at.After(stop) {
					return
				}
				windows[p] <- struct{}{}
				t.published(p, seq)
				body = appendBody(body[:0], p, seq, at, o.BodyBytes)
				var err error
				if buf, err = c.publish(buf, o.Dest, body); err != nil {
					errs <- fmt.Errorf("publisher %d: %w", p, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return nil, err
	}
	// Wait for what is still in flight, up to the drain time.
	deadline := time.Now().Add(o.Drain)
	for time.Now().Before(deadline) {
		if t.complete() {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	r := &result{Label: o.Label, Rate: o.Rate, Scenario: scenario, Target: o.URL, Publishers: o.Publishers, Subscribers: o.Subscribers, BodyBytes: o.BodyBytes}
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
