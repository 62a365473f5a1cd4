package bridge

import (
	"sync"
	"time"

	"github.com/wsbridge/wsbridge/front"
	"github.com/wsbridge/wsbridge/outcome"
)

// DefaultIntakeBytesPerSecond is websocket.large_message_bytes_per_second
// where the config is silent. Taking in a large message costs the gateway
// ~2 ms of CPU per MiB (the read, gws's copy and unmasking, the page
// faults of fresh memory), and on a small box sessions share one core: a
// thousand clients sending 512 KiB at once held it for ~0.5 s, and every
// other client's round trip waited that long (2,000 clients doing it
// again and again put a well-behaved client's p99 at 22-270x alone,
// docs/benchmarks.md). The rate applies only past intakeLanes messages
// being taken in at once, so a few clients sending large messages back to
// back are not slowed by it.
const DefaultIntakeBytesPerSecond = 64 << 20

// intakeLanes is how many large messages may be taken in at once without
// booking the rate: one client sending 1 MiB messages back to back went
// at 198-288 a second, and at 69 a second when every message booked it.
// A few clients holding the lanes with messages they never finish only
// put everyone else on the rate.
const intakeLanes = 8

// maxIntakeWait is the longest a large message waits for its turn; a
// client still waiting then is refused with 1013.
const maxIntakeWait = 2 * time.Second

// lanesPerAddress is how many lanes one address may hold: one address's 8
// messages never finished (112 bytes of headers, renewed each
// message_timeout) put every other client on the rate (one client's
// pipelined 1 MiB messages: 823 a second with the lanes free, 72 with
// them held).
const lanesPerAddress = 2

// maxIntakeWaiting bounds the messages waiting for their turn at once, from
// all addresses: 64 addresses with 16 each took the machine's TCP memory to
// 1,051 MiB. It is two seconds of turns for 1 MiB messages at four times
// the default rate.
const maxIntakeWaiting = 512

// intakeWaitersPerAddress bounds the messages of one address waiting for
// their turn at once; past it the next is refused at once. A waiting
// message's bytes sit in the kernel's socket buffers, outside the budget:
// 2,000 clients of 16 addresses each sending 512 KiB and waiting took
// the machine's TCP memory to 863 MiB.
const intakeWaitersPerAddress = 16

// Intake is the process-wide rate at which the gateway takes in large
// WebSocket messages once intakeLanes of them are being taken in: a
// message beyond memory.OwnBytes books what it will hold of the memory
// budget, and the read of its bytes waits its turn, up to maxIntakeWait,
// with them left in the kernel. Only a message's first booking waits; what
// its later fragments add is booked without waiting, so a message waits
// once. Messages of at most memory.OwnBytes never wait.
//
// Turns go to client addresses in rotation, each address's messages in
// order: an address sending many large messages at once, over many
// connections, waits for its own, while a message from any other address
// is next but a few (in first-come order, 128 connections of one address
// made every other address's message wait 2 s and be refused). A nil
// Intake has no rate.
type Intake struct {
	rate  float64 // bytes a second
	burst float64

	mu          sync.Mutex
	lanes       int            // messages being taken in on a lane
	laneHolders map[string]int // of them, per address
	tokens      float64        // bytes that may be taken in now; below 0, owed
	at          time.Time
	queues      map[string][]*intakeWaiter // waiting messages per address
	order       []string                   // addresses with waiting messages, in turn
	timer       *time.Timer                // armed while messages wait
	waiting     int
}

type intakeWaiter struct {
	n     float64
	ready chan struct{} // closed on its turn
}

// NewIntake makes an intake of bytesPerSecond, of which a quarter second,
// and at least what the largest message books (twice maxMessage, for a
// fragmented one), may be taken at once.
func NewIntake(bytesPerSecond, maxMessage int) *Intake {
	burst := float64(max(bytesPerSecond/4, 2*maxMessage))
	return &Intake{rate: float64(bytesPerSecond), burst: burst, tokens: burst, at: time.Now(),
		queues: map[string][]*intakeWaiter{}, laneHolders: map[string]int{}}
}

// intakeRefusal is what a client whose large message does not get its
// turn within maxIntakeWait is told.
func intakeRefusal() Refusal {
	b := front.Busy{Reason: "too many large messages at once (websocket.large_message_bytes_per_second)", Retry: front.RetryHint(0)}
	return Refusal{Outcome: outcome.Busy, Code: CloseTryAgainLater, Reason: b.CloseReason()}
}

// lane takes a lane for a message from addr if one is free and addr
// holds fewer than lanesPerAddress; give it back with freeLane.
func (in *Intake) lane(addr string) bool {
	if in == nil {
		return true
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.lanes >= intakeLanes || in.laneHolders[addr] >= lanesPerAddress {
		return false
	}
	in.lanes++
	in.laneHolders[addr]++
	return true
}

func (in *Intake) freeLane(addr string) {
	if in == nil {
		return
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	in.lanes--
	if in.laneHolders[addr]--; in.laneHolders[addr] <= 0 {
		delete(in.laneHolders, addr)
	}
}

// now takes n bytes of a message if they may be taken in at once: the
// tokens cover them and no message waits.
func (in *Intake) now(n int64) bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.nowLocked(in.size(n))
}

func (in *Intake) nowLocked(w float64) bool {
	in.refill(time.Now())
	if in.waiting == 0 && in.tokens >= w {
		in.tokens -= w
		return true
	}
	return false
}

// owe books n more bytes of a message that has had its turn, without
// waiting: the messages after it wait the longer.
func (in *Intake) owe(n int64) {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.refill(time.Now())
	in.tokens = max(in.tokens-in.size(n), -in.burst)
}

// size is what n bytes book: a message larger than the burst books the
// whole burst.
func (in *Intake) size(n int64) float64 { return min(float64(n), in.burst) }

// take waits for n bytes of a message from addr to have their turn. It
// reports false when they did not within maxIntakeWait, or done was
// closed first: then nothing is taken.
func (in *Intake) take(addr string, n int64, done <-chan struct{}) bool {
	w := &intakeWaiter{n: in.size(n)}
	in.mu.Lock()
	if in.nowLocked(w.n) {
		in.mu.Unlock()
		return true
	}
	if len(in.queues[addr]) >= intakeWaitersPerAddress || in.waiting >= maxIntakeWaiting {
		in.mu.Unlock()
		return false
	}
	w.ready = make(chan struct{})
	if len(in.queues[addr]) == 0 {
		in.order = append(in.order, addr)
	}
	in.queues[addr] = append(in.queues[addr], w)
	in.waiting++
	in.arm()
	in.mu.Unlock()

	t := time.NewTimer(maxIntakeWait)
	defer t.Stop()
	closed := false
	select {
	case <-w.ready:
		return true
	case <-t.C:
	case <-done:
		closed = true
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	select {
	case <-w.ready: // its turn came as the wait ended
		if closed {
			in.tokens += w.n
		}
		return !closed
	default:
	}
	q := in.queues[addr]
	for i, x := range q {
		if x == w {
			in.queues[addr] = append(q[:i:i], q[i+1:]...)
			break
		}
	}
	if len(in.queues[addr]) == 0 {
		in.drop(addr)
	}
	in.waiting--
	return false
}

// Waiting is how many messages wait for their turn now.
func (in *Intake) Waiting() int {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.waiting
}

func (in *Intake) refill(now time.Time) {
	if now.After(in.at) {
		in.tokens = min(in.burst, in.tokens+now.Sub(in.at).Seconds()*in.rate)
		in.at = now
	}
}

// grant gives turns, an address at a time, while the tokens cover the
// message whose turn it is; then arms the timer for the next.
func (in *Intake) grant() {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.timer = nil
	in.refill(time.Now())
	for len(in.order) > 0 {
		addr := in.order[0]
		q := in.queues[addr]
		if q[0].n > in.tokens {
			break
		}
		in.tokens -= q[0].n
		close(q[0].ready)
		in.waiting--
		if q = q[1:]; len(q) == 0 {
			in.drop(addr)
		} else {
			in.queues[addr] = q
			in.order = append(in.order[1:], addr) // its next message after the others'
		}
	}
	in.arm()
}

// arm sets the timer for when the tokens cover the next turn's message.
func (in *Intake) arm() {
	if in.timer != nil || len(in.order) == 0 {
		return
	}
	need := in.queues[in.order[0]][0].n - in.tokens
	in.timer = time.AfterFunc(time.Duration(max(need, 0)/in.rate*float64(time.Second)), in.grant)
}

// drop forgets addr, which has no message waiting.
func (in *Intake) drop(addr string) {
	delete(in.queues, addr)
	for i, a := range in.order {
		if a == addr {
			in.order = append(in.order[:i], in.order[i+1:]...)
			return
		}
	}
}
