package sse

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/wsbridge/wsbridge/auth"
	"github.com/wsbridge/wsbridge/broker"
	"github.com/wsbridge/wsbridge/broker/amqpbroker"
	"github.com/wsbridge/wsbridge/broker/brokertest"
	"github.com/wsbridge/wsbridge/broker/mqttbroker"
	"github.com/wsbridge/wsbridge/broker/natsbroker"
	"github.com/wsbridge/wsbridge/broker/stompbroker"
	"github.com/wsbridge/wsbridge/front"
)

func natsBroker(t testing.TB) broker.Broker {
	t.Helper()
	b, err := natsbroker.New(natsbroker.Options{Endpoint: broker.Endpoint{Address: "nats://" + brokertest.NATS(t)}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func amqpBroker(t testing.TB, addr string) broker.Broker {
	t.Helper()
	cred := brokertest.RabbitCredential(t)
	b := amqpbroker.New(amqpbroker.Options{Endpoint: broker.Endpoint{Address: addr, Credential: &cred, DialTimeout: time.Second}})
	t.Cleanup(func() { b.Close() })
	return b
}

// backends are the brokers every behaviour test runs against.
func backends(t *testing.T) map[string]func(testing.TB) broker.Broker {
	return map[string]func(testing.TB) broker.Broker{
		"nats": natsBroker,
		"amqp": func(t testing.TB) broker.Broker { return amqpBroker(t, brokertest.RabbitAMQP(t)) },
		"mqtt": func(t testing.TB) broker.Broker {
			b := mqttbroker.New(mqttbroker.Options{Endpoint: broker.Endpoint{Address: brokertest.Mosquitto(t)}})
			t.Cleanup(func() { b.Close() })
			return b
		},
		"stomp": func(t testing.TB) broker.Broker {
			cred := brokertest.RabbitCredential(t)
			b := stompbroker.New(stompbroker.Options{Endpoint: broker.Endpoint{Address: brokertest.RabbitSTOMP(t), Credential: &cred}})
			t.Cleanup(func() { b.Close() })
			return b
		},
	}
}

type hubServer struct {
	url string
	hub *Hub
	srv *front.Server
}

func startHub(t testing.TB, b broker.Broker, o Options) *hubServer {
	t.Helper()
	return startHubWith(t, b, o, nil, io.Discard)
}

// startHubWith serves the hub's routes with an auth policy, logging to logs.
func startHubWith(t testing.TB, b broker.Broker, o Options, p *auth.Policy, logs io.Writer) *hubServer {
	t.Helper()
	return startHubOn(t, b, o, p, logs, front.ServerOptions{}, nil)
}

// startHubOn is startHubWith on a server with options so, each route's
// handler wrapped by wrap (nil: none).
func startHubOn(t testing.TB, b broker.Broker, o Options, p *auth.Policy, logs io.Writer, so front.ServerOptions,
	wrap func(http.Handler) http.Handler) *hubServer {
	t.Helper()
	if wrap == nil {
		wrap = func(h http.Handler) http.Handler { return h }
	}
	log := slog.New(slog.NewTextHandler(logs, nil))
	srv := front.NewServer(log, so)
	if o.Origins == nil {
		o.Origins, _ = front.NewOrigins([]string{"http://app.example"})
	}
	o.Conns, o.Log = srv.Conns, log
	h := NewHub(b, o)
	srv.Handle("/sse", wrap(h.StreamHandler("/sse", p)))
	srv.Handle("/sse/", wrap(h.StreamHandler("/sse", p)))
	srv.Handle("/publish/", wrap(h.PublishHandler("/publish", p)))
	t.Cleanup(h.Close) // runs after the server's shutdown, registered below
	return &hubServer{url: "http://" + brokertest.Serve(t, srv), hub: h, srv: srv}
}

func (s *hubServer) publish(t testing.TB, topic, body string) {
	t.Helper()
	resp, err := http.Post(s.url+"/publish/"+topic, "text/plain", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("publish %s: %d %s", topic, resp.StatusCode, b)
	}
}

// tryPublish publishes, and reports false on a 503 (the backend
// unavailable).
func (s *hubServer) tryPublish(t testing.TB, topic, body string) bool {
	t.Helper()
	resp, err := http.Post(s.url+"/publish/"+topic, "text/plain", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusAccepted:
		return true
	case http.StatusServiceUnavailable:
		return false
	}
	t.Fatalf("publish %s: %d %s", topic, resp.StatusCode, b)
	return false
}

// sseEvent is one parsed event.
type sseEvent struct {
	id, typ, data, retry string
	comment              bool
}

// stream is an open SSE response being parsed.
type stream struct {
	resp   *http.Response
	events chan sseEvent
	done   chan struct{}
	cancel context.CancelFunc
}

func openStream(t testing.TB, url string, header http.Header) *stream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		cancel()
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, b)
	}
	s := &stream{resp: resp, events: make(chan sseEvent, 4096), done: make(chan struct{}), cancel: cancel}
	go s.read()
	t.Cleanup(s.close)
	return s
}

func (s *stream) close() {
	s.cancel()
	s.resp.Body.Close()
	<-s.done
}

// read parses the stream per the HTML5 EventSource rules that matter here.
func (s *stream) read() {
	defer close(s.done)
	sc := bufio.NewScanner(s.resp.Body)
	sc.Buffer(make([]byte, 64<<10), 4<<20) // a 1 MiB event, base64 too
	var ev sseEvent
	var data []string
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if ev.comment || data != nil || ev.typ != "" || ev.retry != "" {
				ev.data = strings.Join(data, "\n")
				s.events <- ev
			}
			ev, data = sseEvent{}, nil
		case strings.HasPrefix(line, ":"):
			ev.comment = true
		default:
			field, value, _ := strings.Cut(line, ":")
			value = strings.TrimPrefix(value, " ")
			switch field {
			case "id":
				ev.id = value
			case "event":
				ev.typ = value
			case "data":
				data = append(data, value)
			case "retry":
				ev.retry = value
			}
		}
	}
}

// next returns the next event that is not a comment or retry hint.
func (s *stream) next(t testing.TB) sseEvent {
	t.Helper()
	for {
		select {
		case ev := <-s.events:
			if ev.comment || ev.retry != "" {
				continue
			}
			return ev
		case <-s.done:
			t.Fatal("stream ended while waiting for an event")
		case <-time.After(10 * time.Second):
			t.Fatal("no event within 10s")
		}
	}
}

// heartbeats waits for n comment lines on the stream.
func (s *stream) heartbeats(t testing.TB, n int) {
	t.Helper()
	for seen := 0; seen < n; {
		select {
		case e := <-s.events:
			if e.comment {
				seen++
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%d of %d heartbeat comments", seen, n)
		}
	}
}

// ended waits for the server to end the stream.
func (s *stream) ended(t testing.TB) {
	t.Helper()
	for {
		select {
		case <-s.events:
		case <-s.done:
			return
		case <-time.After(10 * time.Second):
			t.Fatal("stream not ended within 10s")
		}
	}
}

// last waits for the server to end the stream and returns its last event
// that is not a comment.
func (s *stream) last(t testing.TB) sseEvent {
	t.Helper()
	var last sseEvent
	keep := func(e sseEvent) {
		if !e.comment {
			last = e
		}
	}
	for {
		select {
		case e := <-s.events:
			keep(e)
		case <-s.done: // read has sent every event it parsed
			for {
				select {
				case e := <-s.events:
					keep(e)
				default:
					return last
				}
			}
		case <-time.After(10 * time.Second):
			t.Fatal("stream not ended within 10s")
		}
	}
}

func uniqueTopic(t testing.TB) string {
	return fmt.Sprintf("wsbridge.test.%s.%d", strings.NewReplacer("/", "-", " ", "_").Replace(t.Name()), time.Now().UnixNano())
}

func brokerMessage(topic, body string) broker.Message {
	return broker.Message{Topic: topic, Data: []byte(body)}
}

// waitStats polls the hub's counters until ok holds: they change on other
// goroutines with no event to wait for.
func (s *hubServer) waitStats(t testing.TB, what string, ok func(Stats) bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !ok(s.hub.Stats()) {
		if time.Now().After(deadline) {
			t.Fatalf("stats %+v: want %s", s.hub.Stats(), what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
