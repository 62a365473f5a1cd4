package sse

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/wsbridge/wsbridge/auth"
	"github.com/wsbridge/wsbridge/bridge"
	"github.com/wsbridge/wsbridge/validate"
)

// maxBatch bounds the events written between two flushes.
const maxBatch = 64

// StreamHandler serves GET PREFIX/<topic> and GET PREFIX?topic=a&topic=b
// to the clients p admits (nil: everyone) for the topics it allows them.
func (h *Hub) StreamHandler(prefix string, p *auth.Policy) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !admit(w, r, h.o.Origins, http.MethodGet) {
			return
		}
		topics, err := streamTopics(r, prefix, h.o.MaxTopics)
		if err != nil {
			bridge.Error(w, http.StatusBadRequest, err.Error())
			return
		}
		id, ok := h.authorize(w, r, p, auth.Subscribe, topics)
		if !ok {
			return
		}
		var expired <-chan time.Time
		if !id.Expires.IsZero() {
			t := time.NewTimer(time.Until(id.Expires.Add(p.ExpiryGrace())))
			defer t.Stop()
			expired = t.C
		}
		h.serve(w, r, topics, expired)
	})
}

// authorize authenticates the request (401) and applies the ACL to each
// topic (403); denials are logged with the identity and topic.
func (h *Hub) authorize(w http.ResponseWriter, r *http.Request, p *auth.Policy, act auth.Action, topics []string) (*auth.Identity, bool) {
	id, err := bridge.RequestIdentity(w, r, p, false)
	if err != nil {
		h.o.Log.Info("sse request refused", "remote", r.RemoteAddr, "path", r.URL.Path, "outcome", "unauthenticated", "reason", err.Error())
		return nil, false
	}
	if p == nil {
		return id, true
	}
	for _, t := range topics {
		if err := p.Allow(id, act, auth.Dest{Kind: auth.Topic, Name: t}); err != nil {
			h.o.Log.Info("sse access denied", "remote", r.RemoteAddr, "identity", id.String(), "action", act.String(), "destination", t)
			bridge.Error(w, http.StatusForbidden, err.Error())
			return nil, false
		}
	}
	return id, true
}

// streamTopics reads the topic from the path or the topic query
// parameters, checked and without repeats.
func streamTopics(r *http.Request, prefix string, max int) ([]string, error) {
	var topics []string
	if rest := strings.TrimPrefix(strings.TrimPrefix(r.URL.Path, prefix), "/"); rest != "" {
		topics = append(topics, rest)
	}
	topics = append(topics, r.URL.Query()["topic"]...)
	if len(topics) == 0 {
		return nil, fmt.Errorf("name a topic: %s/<topic> or %s?topic=a&topic=b", prefix, prefix)
	}
	slices.Sort(topics)
	topics = slices.Compact(topics)
	if len(topics) > max {
		return nil, fmt.Errorf("%d topics requested; a stream may follow at most %d", len(topics), max)
	}
	for _, t := range topics {
		if err := validate.Topic(t); err != nil {
			return nil, err
		}
	}
	return topics, nil
}

// parseLastID reads "<epoch>-<seq>". ok is false for an id this process
// did not issue (another epoch, or garbage): the stream then starts with a
// reset event.
func (h *Hub) parseLastID(id string) (seq uint64, ok bool) {
	epoch, n, found := strings.Cut(id, "-")
	if !found || epoch != h.epoch {
		return 0, false
	}
	seq, err := strconv.ParseUint(n, 10, 64)
	return seq, err == nil && seq > 0
}

// serve streams names until the client goes, the upstream ends, shutdown,
// or expired fires (the client's token ran out).
func (h *Hub) serve(w http.ResponseWriter, r *http.Request, names []string, expired <-chan time.Time) {
	log := h.o.Log.With("remote", r.RemoteAddr, "topics", strings.Join(names, ","))
	lastID := r.Header.Get("Last-Event-ID")
	if lastID == "" {
		lastID = r.URL.Query().Get("lastEventId")
	}
	var lastSeq uint64
	reset := false
	if lastID != "" {
		var ok bool
		if lastSeq, ok = h.parseLastID(lastID); !ok {
			reset, lastSeq = true, 0
		}
	}

	c := newClient(h.o.ClientQueue)
	release, err := h.o.Conns.Add(c, bridge.ClientIP(r))
	if err != nil {
		bridge.RefuseOverLimit(w, err)
		return
	}
	defer release()

	var (
		held   []*topic
		replay []*event
	)
	defer func() {
		for _, t := range held {
			t.release(c)
		}
	}()
	for _, name := range names {
		t, rp, rs, err := h.acquire(r.Context(), name, c, lastSeq)
		if err != nil {
			if errors.Is(err, context.Canceled) {
				return
			}
			log.Warn("sse stream refused: backend unavailable", "error", err.Error())
			w.Header().Set("Retry-After", strconv.Itoa(int(h.o.Retry.Seconds()+0.5)))
			bridge.Error(w, http.StatusServiceUnavailable, "backend unavailable; retry shortly")
			return
		}
		held = append(held, t)
		replay = append(replay, rp...)
		reset = reset || rs
	}
	sort.Slice(replay, func(i, j int) bool { return replay[i].seq < replay[j].seq })

	hd := w.Header()
	hd.Set("Content-Type", "text/event-stream")
	hd.Set("Cache-Control", "no-cache")
	hd.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	multi := len(names) > 1

	h.clients.Add(1)
	defer h.clients.Add(-1)
	log.Debug("sse stream opened", "resume", lastID != "", "replay", len(replay), "reset", reset)
	outcome := "client_closed"
	defer func() { log.Debug("sse stream closed", "outcome", outcome) }()

	write := func(b []byte) bool {
		_, err := w.Write(b)
		return err == nil
	}
	rc.SetWriteDeadline(time.Now().Add(h.o.WriteTimeout))
	ok := write(fmt.Appendf(nil, "retry: %d\n\n", h.o.Retry.Milliseconds()))
	if reset {
		msg, _ := json.Marshal(map[string]any{"lastEventId": lastID, "topics": names,
			"reason": "events after lastEventId are no longer kept; state may have changed"})
		ok = ok && write(fmt.Appendf(nil, "event: reset\ndata: %s\n\n", msg))
	}
	for _, ev := range replay {
		ok = ok && write(ev.bytesFor(multi))
	}
	if !ok || rc.Flush() != nil {
		outcome = "write_failed"
		return
	}

	ended := make([]<-chan struct{}, len(held))
	for i, t := range held {
		ended[i] = t.ended
	}
	stop := make(chan struct{})
	defer close(stop)
	anyEnded := mergeDone(ended, stop)
	heartbeat := time.NewTicker(h.o.Heartbeat)
	defer heartbeat.Stop()
	// A flush is a write syscall per stream: a busy stream flushes at most
	// once per FlushInterval and the events in between share it; a quiet
	// one flushes at once.
	flushTimer := time.NewTimer(time.Hour)
	flushTimer.Stop()
	defer flushTimer.Stop()
	var (
		flushDue  <-chan time.Time // the timer's channel while a flush waits
		lastFlush time.Time
		active    bool // something was written since the last heartbeat tick
	)
	flush := func() bool {
		flushDue, active = nil, true
		lastFlush = time.Now()
		return rc.Flush() == nil
	}
	for {
		select {
		case ev := <-c.q:
			if flushDue == nil { // the first write since the last flush
				rc.SetWriteDeadline(time.Now().Add(h.o.WriteTimeout))
			}
			ok := write(ev.bytesFor(multi))
		drain: // more queued events go out with the same flush
			for n := 1; ok && n < maxBatch; n++ {
				select {
				case ev = <-c.q:
					ok = write(ev.bytesFor(multi))
				default:
					break drain
				}
			}
			switch wait := h.o.FlushInterval - time.Since(lastFlush); {
			case !ok:
			case wait <= 0:
				ok = flush()
			case flushDue == nil:
				flushTimer.Reset(wait)
				flushDue = flushTimer.C
			}
			if !ok {
				outcome = "write_failed"
				return
			}
		case <-flushDue:
			if !flush() {
				outcome = "write_failed"
				return
			}
		case <-heartbeat.C:
			if active || flushDue != nil {
				active = false
				continue
			}
			rc.SetWriteDeadline(time.Now().Add(h.o.WriteTimeout))
			if !write([]byte(": heartbeat\n\n")) || rc.Flush() != nil {
				outcome = "write_failed"
				return
			}
		case <-c.kick:
			outcome = "slow_client"
			log.Warn("sse client fell behind and was disconnected; it can resume with Last-Event-ID",
				"queue", h.o.ClientQueue)
			return
		case <-anyEnded:
			outcome = "upstream_ended"
			return
		case <-c.away:
			outcome = "shutdown"
			return
		case <-expired:
			outcome = "token_expired"
			rc.SetWriteDeadline(time.Now().Add(h.o.WriteTimeout))
			write([]byte("event: error\ndata: {\"reason\":\"token expired; reconnect with a fresh one\"}\n\n"))
			rc.Flush()
			return
		case <-r.Context().Done():
			return
		}
	}
}

// mergeDone returns a channel closed when any of chans is, until stop
// closes. A single-topic stream gets its one channel back and costs no
// goroutine.
func mergeDone(chans []<-chan struct{}, stop <-chan struct{}) <-chan struct{} {
	if len(chans) == 1 {
		return chans[0]
	}
	out := make(chan struct{})
	var once sync.Once
	for _, ch := range chans {
		go func() {
			select {
			case <-ch:
				once.Do(func() { close(out) })
			case <-stop:
			}
		}()
	}
	return out
}

// admit does what both handlers do first: the Origin check with CORS
// headers, the answer to a CORS preflight, and 405 for other methods. It
// returns true when the request is method and may proceed.
func admit(w http.ResponseWriter, r *http.Request, origins *bridge.Origins, method string) bool {
	if !allowCORS(w, r, origins, method) {
		return false
	}
	switch r.Method {
	case method:
		return true
	case http.MethodOptions:
		w.WriteHeader(http.StatusNoContent)
	default:
		w.Header().Set("Allow", method+", OPTIONS")
		bridge.Error(w, http.StatusMethodNotAllowed, "use "+method)
	}
	return false
}

// allowCORS sets CORS headers for an allowed browser origin, or answers
// 403 and returns false.
func allowCORS(w http.ResponseWriter, r *http.Request, origins *bridge.Origins, methods string) bool {
	origin := r.Header.Get("Origin")
	if !origins.Check(w, r) {
		return false
	}
	if origin != "" {
		h := w.Header()
		h.Set("Access-Control-Allow-Origin", origin)
		h.Set("Access-Control-Allow-Credentials", "true") // token cookies and Authorization
		h.Add("Vary", "Origin")
		if r.Method == http.MethodOptions {
			h.Set("Access-Control-Allow-Methods", methods+", OPTIONS")
			h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type, Last-Event-ID")
			h.Set("Access-Control-Max-Age", "600")
		}
	}
	return true
}
