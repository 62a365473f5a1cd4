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
	"time"

	"github.com/wsbridge/wsbridge/auth"
	"github.com/wsbridge/wsbridge/front"
	"github.com/wsbridge/wsbridge/memory"
	"github.com/wsbridge/wsbridge/outcome"
	"github.com/wsbridge/wsbridge/validate"
)

// StreamHandler serves GET PREFIX/<topic> and GET PREFIX?topic=a&topic=b
// to the clients p admits (nil: everyone) for the topics it allows them.
// It is a front.BusyRefuser: see RefuseBusy.
func (h *Hub) StreamHandler(prefix string, p *auth.Policy) http.Handler {
	return &streamHandler{h: h, prefix: prefix, p: p}
}

type streamHandler struct {
	h      *Hub
	prefix string
	p      *auth.Policy
}

func (s *streamHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := s.h
	if !admit(w, r, h.o.Origins, http.MethodGet) {
		return
	}
	topics, err := streamTopics(r, s.prefix, h.o.MaxTopics)
	if err != nil {
		front.Error(w, http.StatusBadRequest, err.Error())
		return
	}
	id, ok := h.authorize(w, r, s.p, auth.Subscribe, topics)
	if !ok {
		return
	}
	// The same rule as WebSocket sessions: see auth.Policy.EndsAt.
	h.serve(w, r, topics, s.p.EndsAt(id))
}

// RefuseBusy answers a stream refused for load (by the handshake rate, the
// connection limits, or the per-address password checks) so that
// EventSource comes back by itself: it gives up for good on any answer
// but 200 text/event-stream, so the refusal is such a stream, one that
// sets its reconnection time to the hint and ends at once. Its one event,
// busy, tells a page why, with the hint in milliseconds; it carries no
// id, so the client keeps its Last-Event-ID for the retry.
func (s *streamHandler) RefuseBusy(w http.ResponseWriter, r *http.Request, b front.Busy) {
	if !allowCORS(w, r, s.h.o.Origins, http.MethodGet) {
		return
	}
	refuseBusy(w, b)
}

func refuseBusy(w http.ResponseWriter, b front.Busy) { refuse(w, "busy", b) }

// refuseUnavailable answers a stream whose topic could not be subscribed
// to now (the broker down, silent, or refusing the gateway's login) as a
// refusal for load is answered, and for the same reason: a 503 would end
// EventSource for good, so that it never came back once the broker did.
// Its event is unavailable, the reason why's.
func (h *Hub) refuseUnavailable(w http.ResponseWriter, err error) {
	h.backendRefused.Add(1)
	h.backend.refused.Add(1)
	if errors.Is(err, errNoAnswer) {
		if down := h.backend.current(); down != nil {
			err = down // a cause known from an earlier attempt says more
		}
	}
	refuse(w, "unavailable", front.Busy{Outcome: outcome.BrokerUnavailable, Reason: why(err, h.o.SubscribeWait), Retry: front.RetryHint(0)})
}

// refusalEvent is the event that ends a refused stream: it sets
// EventSource's reconnection time to retry, and its data says why, with
// the retry in milliseconds. It carries no id, so the client keeps its
// Last-Event-ID for the retry.
func refusalEvent(event, reason string, retry time.Duration) []byte {
	ms := retry.Milliseconds()
	data, _ := json.Marshal(struct {
		Reason  string `json:"reason"`
		RetryMS int64  `json:"retry_ms"`
	}{reason, ms})
	return fmt.Appendf(nil, "retry: %d\nevent: %s\ndata: %s\n\n", ms, event, data)
}

// refuse answers a stream with refusalEvent and ends it.
func refuse(w http.ResponseWriter, event string, b front.Busy) {
	body := refusalEvent(event, b.Reason, b.Retry)
	hd := w.Header()
	hd.Set("Content-Type", "text/event-stream")
	hd.Set("Cache-Control", "no-cache")
	hd.Set("Content-Length", strconv.Itoa(len(body)))
	hd.Set("Retry-After", strconv.Itoa(int((b.Retry+time.Second-1)/time.Second))) // for clients that are not EventSource
	w.WriteHeader(http.StatusOK)
	w.Write(body)
}

// authorize authenticates the request (401) and applies the ACL to each
// topic (403); denials are logged with the identity and topic. A password
// check refused unchecked gets 429, or, on a stream, refuseBusy.
func (h *Hub) authorize(w http.ResponseWriter, r *http.Request, p *auth.Policy, act auth.Action, topics []string) (*auth.Identity, bool) {
	id, err := front.Authenticate(r, p, false)
	if err != nil {
		h.o.Log.Info("sse request refused", "remote", r.RemoteAddr, "path", r.URL.Path, "outcome", front.LoginOutcome(err), "reason", err.Error())
		if b, busy := front.BusyFor(err); busy && act == auth.Subscribe {
			refuseBusy(w, b)
		} else {
			front.RefuseLogin(w, p, err)
		}
		return nil, false
	}
	if p == nil {
		return id, true
	}
	for _, t := range topics {
		if err := p.Allow(id, act, auth.Dest{Kind: auth.Topic, Name: t}); err != nil {
			h.o.Log.Info("sse access denied", "remote", r.RemoteAddr, "identity", id.String(), "action", act.String(), "destination", t)
			front.Error(w, http.StatusForbidden, err.Error())
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
// or expires (when the client's token runs out; zero: never).
func (h *Hub) serve(w http.ResponseWriter, r *http.Request, names []string, expires time.Time) {
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

	if h.shortOfBudget() {
		// Logged once for the episode, as it began (see topic.deliver).
		h.budgetRefused.Add(1)
		refuseBusy(w, front.Busy{Outcome: outcome.OverBudget, Reason: memory.OverBudgetReason, Retry: front.RetryHint(0)})
		return
	}
	c := newClient(h.o.ClientQueue)
	release, err := h.o.Conns.Add(c, front.ClientIP(r))
	if err != nil {
		b, _ := front.BusyFor(err)
		log.Warn("sse stream refused", "outcome", b.Outcome, "reason", b.Reason, "retry", b.Retry)
		refuseBusy(w, b)
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
		// No topic offers c anything now: what is left is let go once.
		for _, ev := range replay {
			ev.release(h.o.Budget)
		}
		c.drain(h.o.Budget)
	}()
	var subscribeBy time.Time // for the subscriptions not made yet, all of them
	for _, name := range names {
		t, rp, rs, err := h.acquire(r.Context(), name, c, lastSeq, &subscribeBy)
		if err != nil {
			if errors.Is(err, context.Canceled) {
				return
			}
			if errors.Is(err, errTooManyTopics) {
				h.topicsRefused.Add(1)
				if !h.topicsFull.Swap(true) {
					log.Warn("sse streams refused: as many topics are followed as sse.max_live_topics allows, none without a stream", "max_live_topics", h.o.MaxLiveTopics)
				}
				refuseBusy(w, front.Busy{Outcome: outcome.OverCapacity, Reason: err.Error(), Retry: front.RetryHint(0)})
				return
			}
			if outage(err) || errors.Is(err, errNoAnswer) || errors.Is(err, errHubClosed) {
				// An outage is logged once, by the attempt that finds it.
				log.Debug("sse stream refused: backend unavailable", "error", err.Error())
			} else {
				log.Warn("sse stream refused: the broker did not take the subscription", "backend", h.o.Backend, "error", err.Error())
			}
			h.refuseUnavailable(w, err)
			return
		}
		held = append(held, t)
		replay = append(replay, rp...)
		reset = reset || rs
	}
	if h.topicsFull.Load() && h.topicsFull.Swap(false) {
		log.Info("sse streams are admitted to new topics again", "max_live_topics", h.o.MaxLiveTopics)
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
	ended := endClientGone
	defer func() { log.Debug("sse stream closed", "outcome", ended) }()

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
		ok = ok && ev.writeTo(write, multi)
		ev.release(h.o.Budget)
	}
	replay = nil
	if !ok || rc.Flush() != nil {
		ended = outcome.ClientWriteFailed
		return
	}

	// Every reason to end arrives on c.stop, so the loop's select stays
	// small: it runs once per stream per flush interval.
	defer context.AfterFunc(r.Context(), func() { c.end(endClientGone) })()
	if !expires.IsZero() {
		defer time.AfterFunc(time.Until(expires), func() { c.end(endTokenExpired) }).Stop()
	}

	// A flush is a write syscall per stream. A quiet stream's event is
	// written and flushed at once; then, for one FlushInterval, the stream
	// leaves its queue alone (unless it fills up to half) and writes what
	// gathered in one flush when the interval ends. A busy stream so wakes
	// once per interval, not once per event; one with nothing new goes
	// back to waiting on its queue, and gets a heartbeat after Heartbeat.
	// One timer serves both.
	tm := time.NewTimer(h.o.Heartbeat)
	defer tm.Stop()
	var (
		interval  bool // tm times a flush interval, not the heartbeat
		unflushed bool // written since the last flush
		deadline  time.Time
	)
	// armDeadline bounds the coming writes. Re-arming costs a runtime call
	// per flush, so a deadline still at least half the timeout away stays.
	armDeadline := func() {
		if now := time.Now(); deadline.Sub(now) < h.o.WriteTimeout/2 {
			deadline = now.Add(h.o.WriteTimeout)
			rc.SetWriteDeadline(deadline)
		}
	}
	// writeEvent writes one event taken from c.q and lets go of it.
	writeEvent := func(ev *event) bool {
		ok := ev.writeTo(write, multi)
		c.sent(ev, h.o.Budget)
		return ok
	}
	// writeQueued writes the events queued now, and not those that arrive
	// meanwhile, so a busy stream still flushes. A topic that ends the
	// client may empty c.q meanwhile (client.drain), so no receive waits.
	writeQueued := func() bool {
		for n := len(c.q); n > 0; n-- {
			select {
			case ev := <-c.q:
				if !writeEvent(ev) {
					return false
				}
				unflushed = true
			default:
				return true
			}
		}
		return true
	}
	flush := func() bool {
		unflushed, interval = false, h.o.FlushInterval > 0
		if interval {
			tm.Reset(h.o.FlushInterval)
		} else {
			tm.Reset(h.o.Heartbeat)
		}
		return rc.Flush() == nil
	}
	for {
		q := c.q
		if interval {
			q = nil
		}
		ok := true
		select {
		case ev := <-q: // the first event after a quiet spell
			armDeadline()
			ok = writeEvent(ev) && writeQueued() && flush()
		case <-c.pressure: // half full during an interval
			if interval {
				armDeadline()
				ok = writeQueued()
			}
		case <-tm.C:
			switch {
			case interval && (unflushed || len(c.q) > 0):
				armDeadline()
				ok = writeQueued() && flush()
			case interval: // nothing new: quiet from here on
				interval = false
				tm.Reset(h.o.Heartbeat)
			default: // quiet for a whole heartbeat period
				armDeadline()
				ok = write([]byte(": heartbeat\n\n")) && flush()
			}
		case <-c.stop:
			ended = c.why
			switch ended {
			case endSlow:
				log.Warn("sse client fell behind and was disconnected; it can resume with Last-Event-ID",
					"queue_events", h.o.ClientQueue, "queue_bytes", h.o.ClientQueueBytes)
			case endTokenExpired:
				armDeadline()
				write([]byte("event: error\ndata: {\"reason\":\"token expired; reconnect with a fresh one\"}\n\n"))
				rc.Flush()
			case endUpstream:
				// EventSource reconnects after any end of a stream; a
				// jittered retry spreads the crowd that lost the broker
				// together, and the event tells a page why.
				armDeadline()
				write(refusalEvent("unavailable", why(errLost, 0), front.RetryHint(0)))
				rc.Flush()
			}
			return
		}
		if !ok {
			ended = outcome.ClientWriteFailed
			return
		}
	}
}

// admit does what both handlers do first: the Origin check with CORS
// headers, the answer to a CORS preflight, and 405 for other methods. It
// returns true when the request is method and may proceed.
func admit(w http.ResponseWriter, r *http.Request, origins *front.Origins, method string) bool {
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
		front.Error(w, http.StatusMethodNotAllowed, "use "+method)
	}
	return false
}

// allowCORS sets CORS headers for an allowed browser origin, or answers
// 403 and returns false.
func allowCORS(w http.ResponseWriter, r *http.Request, origins *front.Origins, methods string) bool {
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
