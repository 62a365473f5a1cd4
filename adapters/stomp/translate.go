package stomp

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wsbridge/wsbridge/bridge"
	"github.com/wsbridge/wsbridge/broker"
	"github.com/wsbridge/wsbridge/memory"
	"github.com/wsbridge/wsbridge/outcome"
	"github.com/wsbridge/wsbridge/validate"
)

// Translation-mode limits per session. What a session may make the
// gateway hold for it: maxQueueBytes of messages waiting for the client
// (plus the one being written) and maxTxBytes of messages in open
// transactions, every byte of it also taken from the memory budget; the
// broker client holds nothing for it, since delivery only queues.
const (
	maxSubscriptions  = 64
	maxTransactions   = 16
	maxTxMessages     = 1000
	maxTxBytes        = 4 << 20
	maxQueueMessages  = 1024
	maxQueueBytes     = 4 << 20
	publishTimeout    = 10 * time.Second
	defaultHeartBeat  = 10 * time.Second
	heartBeatGraceMul = 2
)

// translator terminates STOMP for one session and maps it onto a
// broker.Broker: /topic/x is topic x, /queue/x is topic x in queue group
// "queue.x" (one consumer gets each message).
type translator struct {
	s      *session
	broker *broker.Shared // NewRelay wraps every translate broker in one

	mu   sync.Mutex // guards subs and hbTimer
	subs map[string]*tsub

	txs     map[string][]broker.Message // read loop only
	txBytes int64                       // their bodies' bytes, taken from the budget
	msgID   atomic.Uint64

	// out holds MESSAGE frames for the client's writer: delivery runs on
	// the broker client's goroutine, shared by every subscriber of the
	// topic, and must never wait for one client's socket.
	out    chan []byte
	budget *memory.Budget
	// queued is what waits in out, held what of it is taken from the
	// budget: all past the first memory.OwnBytes, which are the
	// connection's own, so that clients spending the budget (slow readers,
	// partial frames) cannot get a well-behaved client's next small
	// delivery refused.
	qmu            sync.Mutex
	queued, queHld int64

	hbOut, hbIn time.Duration
	hbTimer     *time.Timer
	hbSeen      uint32
}

type tsub struct {
	id, dest string
	ackMode  string
	sub      broker.Subscription
}

func newTranslator(s *session, b *broker.Shared) *translator {
	t := &translator{s: s, broker: b, subs: map[string]*tsub{}, txs: map[string][]broker.Message{},
		out: make(chan []byte, maxQueueMessages), budget: s.relay.opts.WS.Budget}
	go t.writer()
	return t
}

// writer sends queued MESSAGE frames to the client until the session
// ends, then gives back what was left queued.
func (t *translator) writer() {
	s := t.s
	for {
		select {
		case b := <-t.out:
			t.dequeued(b)
			if s.toClient(b) {
				s.Sent(1)
			}
		case <-s.done:
			t.drop()
			return
		}
	}
}

// drop empties the queue of a client being dropped, so what it held is
// free at once rather than once its last write has timed out.
func (t *translator) drop() {
	for {
		select {
		case b := <-t.out:
			t.dequeued(b)
		default:
			return
		}
	}
}

func (t *translator) dequeued(b []byte) { t.account(-int64(len(b))) }

// account adds delta to the queued bytes and settles what they hold of the
// budget. It reports false, changing nothing, when the budget cannot spare
// an increase.
func (t *translator) account(delta int64) bool {
	t.qmu.Lock()
	defer t.qmu.Unlock()
	q := t.queued + delta
	held := max(0, q-memory.OwnBytes)
	switch more := held - t.queHld; {
	case more > 0:
		if !t.budget.Take(more) {
			return false
		}
	case more < 0:
		t.budget.Give(-more)
	}
	t.queued, t.queHld = q, held
	return true
}

// queuedBytes is what waits for the client's writer.
func (t *translator) queuedBytes() int64 {
	t.qmu.Lock()
	defer t.qmu.Unlock()
	return t.queued
}

// frame handles one checked client frame. It returns false when the
// session has been ended.
func (t *translator) frame(f *validate.STOMPFrame) bool {
	s := t.s
	var ok bool
	switch f.Command {
	case validate.CmdConnect, validate.CmdStomp:
		ok = t.connect(f)
	case validate.CmdSend:
		ok = t.send(f)
	case validate.CmdSubscribe:
		ok = t.subscribe(f)
	case validate.CmdUnsubscribe:
		ok = t.unsubscribe(f)
	case validate.CmdAck, validate.CmdNack:
		ok = true // NATS core has no redelivery: acknowledgements are accepted and have no effect
	case validate.CmdBegin, validate.CmdCommit, validate.CmdAbort:
		ok = t.transaction(f)
	case validate.CmdDisconnect:
		s.SaidGoodbye()
		if r, has := f.Header("receipt"); has {
			s.writeText(fmt.Appendf(nil, "RECEIPT\nreceipt-id:%s\n\n\x00", r))
		}
		s.finish(outcome.Disconnected, "", "", bridge.CloseNormal)
		return false
	}
	if !ok {
		return false
	}
	if r, has := f.Header("receipt"); has && f.Command != validate.CmdConnect && f.Command != validate.CmdStomp {
		return s.writeText(fmt.Appendf(nil, "RECEIPT\nreceipt-id:%s\n\n\x00", r))
	}
	return true
}

// refuse ends the session with an ERROR for a frame the translation
// cannot honour.
func (t *translator) refuse(msg string) bool {
	t.s.finish(outcome.Rejected, msg, msg, bridge.ClosePolicy)
	return false
}

func (t *translator) connect(f *validate.STOMPFrame) bool {
	s := t.s
	v := s.in.Version
	var cx, cy time.Duration
	if hb, ok := f.Header("heart-beat"); ok {
		a, b, _ := strings.Cut(string(hb), ",")
		x, _ := strconv.Atoi(a)
		y, _ := strconv.Atoi(b)
		cx, cy = time.Duration(x)*time.Millisecond, time.Duration(y)*time.Millisecond
	}
	ours := s.relay.opts.HeartBeat
	if cy > 0 {
		t.hbOut = max(cy, ours)
	}
	if cx > 0 {
		t.hbIn = max(cx, ours)
	}
	frame := fmt.Appendf(nil, "CONNECTED\nversion:%s\nheart-beat:%d,%d\nserver:wsbridge\nsession:%p\n\n\x00",
		v, ours.Milliseconds(), ours.Milliseconds(), s)
	if v == validate.STOMP10 {
		frame = fmt.Appendf(nil, "CONNECTED\nsession:%p\n\n\x00", s)
		t.hbOut, t.hbIn = 0, 0
	}
	if !s.writeText(frame) {
		return false
	}
	t.startHeartBeats()
	return true
}

// startHeartBeats sends an EOL every hbOut and ends the session when the
// client is silent for heartBeatGraceMul*hbIn, on one timer.
func (t *translator) startHeartBeats() {
	if t.hbOut == 0 && t.hbIn == 0 {
		return
	}
	tick := t.hbOut
	if tick == 0 || (t.hbIn > 0 && t.hbIn < tick) {
		tick = t.hbIn
	}
	var lastIn time.Time = time.Now()
	var lastOut time.Time = time.Now()
	var fire func()
	fire = func() {
		s := t.s
		if s.Closing() {
			return
		}
		now := time.Now()
		if seen := s.KA.Activity(); seen != t.hbSeen {
			t.hbSeen, lastIn = seen, now
		}
		if t.hbIn > 0 && now.Sub(lastIn) > heartBeatGraceMul*t.hbIn {
			s.finish(outcome.HeartbeatTimeout, "no heart-beat from the client", "", bridge.CloseGoingAway)
			return
		}
		if t.hbOut > 0 && now.Sub(lastOut) >= t.hbOut-tick/2 {
			if !s.writeText([]byte("\n")) {
				return
			}
			lastOut = now
		}
		t.mu.Lock()
		if !s.Closing() {
			t.hbTimer.Reset(tick)
		}
		t.mu.Unlock()
	}
	t.mu.Lock()
	t.hbTimer = time.AfterFunc(tick, fire)
	t.mu.Unlock()
}

// topicOf maps a STOMP destination onto a topic and, for /queue/, a queue
// group.
func topicOf(dest string) (topic, group string, err error) {
	switch {
	case strings.HasPrefix(dest, "/topic/"):
		topic = dest[len("/topic/"):]
	case strings.HasPrefix(dest, "/queue/"):
		topic = dest[len("/queue/"):]
		group = "queue." + topic
	default:
		return "", "", fmt.Errorf("destination %q: use /topic/<name> or /queue/<name>", dest)
	}
	if err := validate.Topic(topic); err != nil {
		return "", "", err
	}
	return topic, group, nil
}

func (t *translator) send(f *validate.STOMPFrame) bool {
	dest, _ := f.Header("destination")
	topic, _, err := topicOf(unescape(dest, t.s.in.Version))
	if err != nil {
		return t.refuse(err.Error())
	}
	ct, _ := f.Header("content-type")
	m := broker.Message{Topic: topic, Data: append([]byte(nil), f.Body()...), ContentType: string(ct)}
	if tx, ok := f.Header("transaction"); ok {
		msgs, open := t.txs[string(tx)]
		if !open {
			return t.refuse(fmt.Sprintf("transaction %q is not open", tx))
		}
		if len(msgs) >= maxTxMessages {
			return t.refuse(fmt.Sprintf("transaction %q holds more than %d messages", tx, maxTxMessages))
		}
		n := int64(len(m.Data))
		if t.txBytes+n > maxTxBytes {
			return t.refuse(fmt.Sprintf("open transactions hold more than %d bytes", maxTxBytes))
		}
		if !t.budget.Take(n) {
			t.s.Refuse(bridge.OverBudget())
			return false
		}
		t.txBytes += n
		t.txs[string(tx)] = append(msgs, m)
		return true
	}
	return t.publish(m)
}

func (t *translator) publish(m broker.Message) bool {
	ctx, cancel := context.WithTimeout(context.Background(), publishTimeout)
	defer cancel()
	err := t.broker.Publish(ctx, m)
	if errors.Is(err, broker.ErrTooLarge) {
		msg := strings.TrimPrefix(err.Error(), "nats: ")
		t.s.finish(outcome.TooLarge, "message too large for the broker", msg, bridge.CloseTooLarge)
		return false
	}
	if err != nil {
		t.s.relay.opts.Log.Warn("stomp publish failed", "route", t.s.relay.opts.Route, "error", err.Error())
		t.s.finish(outcome.BrokerUnavailable, "broker unavailable", "the message was not published", bridge.CloseInternal)
		return false
	}
	return true
}

func (t *translator) transaction(f *validate.STOMPFrame) bool {
	txb, _ := f.Header("transaction")
	tx := string(txb)
	msgs, open := t.txs[tx]
	switch f.Command {
	case validate.CmdBegin:
		if open {
			return t.refuse(fmt.Sprintf("transaction %q is already open", tx))
		}
		if len(t.txs) >= maxTransactions {
			return t.refuse(fmt.Sprintf("more than %d open transactions", maxTransactions))
		}
		t.txs[tx] = nil
		return true
	case validate.CmdCommit:
		if !open {
			return t.refuse(fmt.Sprintf("transaction %q is not open", tx))
		}
		t.dropTx(tx)
		for _, m := range msgs {
			if !t.publish(m) {
				return false
			}
		}
		return true
	default: // ABORT
		if !open {
			return t.refuse(fmt.Sprintf("transaction %q is not open", tx))
		}
		t.dropTx(tx)
		return true
	}
}

// dropTx closes a transaction and gives back what its messages held.
func (t *translator) dropTx(tx string) {
	for _, m := range t.txs[tx] {
		n := int64(len(m.Data))
		t.txBytes -= n
		t.budget.Give(n)
	}
	delete(t.txs, tx)
}

func (t *translator) subscribe(f *validate.STOMPFrame) bool {
	v := t.s.in.Version
	idb, _ := f.Header("id")
	id := unescape(idb, v)
	if id == "" {
		id = "default" // STOMP 1.0 allows SUBSCRIBE without an id
	}
	destb, _ := f.Header("destination")
	dest := unescape(destb, v)
	topic, group, err := topicOf(dest)
	if err != nil {
		return t.refuse(err.Error())
	}
	ack := "auto"
	if a, ok := f.Header("ack"); ok {
		ack = string(a)
	}
	t.mu.Lock()
	_, dup := t.subs[id]
	n := len(t.subs)
	t.mu.Unlock()
	if dup {
		return t.refuse(fmt.Sprintf("subscription id %q is already in use", id))
	}
	if n >= maxSubscriptions {
		return t.refuse(fmt.Sprintf("more than %d subscriptions on one connection", maxSubscriptions))
	}
	ts := &tsub{id: id, dest: dest, ackMode: ack}
	deliver := func(m broker.Message) { t.deliver(ts, m) }
	ctx, cancel := context.WithTimeout(context.Background(), publishTimeout)
	defer cancel()
	var sub broker.Subscription
	if group != "" {
		sub, err = t.broker.QueueSubscribe(ctx, topic, group, deliver)
		if errors.Is(err, broker.ErrNoQueueGroups) {
			return t.refuse("/queue/ destinations need a NATS backend")
		}
	} else {
		sub, err = t.broker.Subscribe(ctx, topic, deliver)
	}
	if err != nil {
		t.s.finish(outcome.BrokerUnavailable, "broker unavailable", "subscribing failed", bridge.CloseInternal)
		return false
	}
	ts.sub = sub
	t.mu.Lock()
	t.subs[id] = ts
	t.mu.Unlock()
	go func() { // a lost broker connection ends the session, as in relay mode
		select {
		case <-sub.Done():
			t.s.finish(outcome.BrokerLost, "broker connection lost", "the subscription to "+dest+" ended", bridge.CloseInternal)
		case <-t.s.done:
		}
	}()
	return true
}

func (t *translator) unsubscribe(f *validate.STOMPFrame) bool {
	idb, ok := f.Header("id")
	if !ok {
		idb, _ = f.Header("destination") // STOMP 1.0 may name the destination
	}
	id := unescape(idb, t.s.in.Version)
	t.mu.Lock()
	ts, ok := t.subs[id]
	if !ok && t.s.in.Version == validate.STOMP10 {
		ts, ok = t.subs["default"]
		id = "default"
	}
	delete(t.subs, id)
	t.mu.Unlock()
	if !ok {
		return t.refuse(fmt.Sprintf("no subscription with id %q", id))
	}
	ts.sub.Unsubscribe()
	return true
}

// deliver writes one broker message to the client as a MESSAGE frame. It
// runs on the broker client's goroutine; the write is bounded by the write
// timeout, after which the session ends.
func (t *translator) deliver(ts *tsub, m broker.Message) {
	s := t.s
	if s.Closing() {
		return
	}
	v := validate.STOMPVersion(s.version.Load())
	id := t.msgID.Add(1)
	b := make([]byte, 0, len(m.Data)+160)
	b = append(b, "MESSAGE\n"...)
	b = validate.AppendSTOMPHeader(b, v, "destination", ts.dest)
	b = strconv.AppendUint(append(b, "message-id:"...), id, 10)
	b = validate.AppendSTOMPHeader(append(b, '\n'), v, "subscription", ts.id)
	if ts.ackMode != "auto" && v >= validate.STOMP12 {
		b = append(strconv.AppendUint(append(b, "ack:"...), id, 10), '\n')
	}
	if m.ContentType != "" {
		b = validate.AppendSTOMPHeader(b, v, "content-type", m.ContentType)
	}
	b = append(strconv.AppendInt(append(b, "content-length:"...), int64(len(m.Data)), 10), "\n\n"...)
	b = append(b, m.Data...)
	b = append(b, 0)
	t.enqueue(b)
}

// enqueue hands a frame to the writer without waiting. A client that lets
// more than maxQueueMessages or maxQueueBytes wait is dropped, and only it:
// the others on the topic are not held up, nor is the broker client's
// goroutine by the ERROR that goes to a client that does not read.
func (t *translator) enqueue(b []byte) {
	s := t.s
	n := int64(len(b))
	if q := t.queuedBytes() + n; q > maxQueueBytes && q > n {
		t.drop()
		go s.dropSlow(fmt.Sprintf("more than %d bytes waiting for the client (the gateway's per-connection queue)", maxQueueBytes))
		return
	}
	if !t.account(n) {
		go s.Refuse(bridge.OverBudget()) // its answer may wait on the client's socket
		return
	}
	select {
	case t.out <- b:
		// A delivery that passed deliver's Closing check while the session
		// ended may land after close's drop: nothing would take it out
		// again, and what it holds of the budget would be lost with it.
		if s.Closing() {
			t.drop()
		}
	default:
		t.account(-n)
		t.drop()
		go s.dropSlow(fmt.Sprintf("more than %d messages waiting for the client (the gateway's per-connection queue)", maxQueueMessages))
	}
}

// close releases the session's subscriptions and timers.
func (t *translator) close() {
	t.mu.Lock()
	if t.hbTimer != nil {
		t.hbTimer.Stop()
	}
	t.mu.Unlock()
	t.mu.Lock()
	subs := t.subs
	t.subs = map[string]*tsub{}
	t.mu.Unlock()
	for _, ts := range subs {
		ts.sub.Unsubscribe()
	}
	// A delivery that passed deliver's Closing check as the session ended
	// may have been queued after the writer's last drop.
	t.drop()
	for tx := range t.txs { // the read loop has ended: the transactions are its
		t.dropTx(tx)
	}
}

// unescape decodes a 1.1+ header value (\\ \n \c, and \r in 1.2); the
// validator has already rejected undefined escapes.
func unescape(b []byte, v validate.STOMPVersion) string {
	if v < validate.STOMP11 || !strings.Contains(string(b), "\\") {
		return string(b)
	}
	return headerUnescaper.Replace(string(b))
}

var headerUnescaper = strings.NewReplacer("\\\\", "\\", "\\n", "\n", "\\r", "\r", "\\c", ":")
