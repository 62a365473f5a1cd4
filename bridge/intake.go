package bridge

import (
	"sync"
	"time"

	"github.com/wsbridge/wsbridge/outcome"
)

// DefaultIntakeBytesPerSecond is websocket.large_message_bytes_per_second
// where the config is silent. Taking in a large message costs the gateway
// ~2 ms of CPU per MiB (the read, gws's copy and unmasking, the page
// faults of fresh memory), and on a small box sessions share one core: a
// thousand clients sending 512 KiB at once held it for ~0.5 s, and every
// other client's round trip waited that long (2,000 clients doing it
// again and again put a well-behaved client's p99 at 22-270x alone; at
// this rate ~5x, docs/benchmarks.md). 64 MiB/s is a 1 MiB message every
// 16 ms, as fast as one real client sends them here (docs/sizes.md:
// 15-18 ms a 1 MiB round trip).
const DefaultIntakeBytesPerSecond = 64 << 20

// maxIntakeWait is the longest a large message waits for its turn; a
// client still waiting then is refused with 1013.
const maxIntakeWait = 2 * time.Second

// Intake is the process-wide rate at which the gateway takes in large
// WebSocket messages: what a message being assembled beyond
// memory.OwnBytes is charged to the memory budget is also booked here,
// and the read of its bytes waits its turn, up to maxIntakeWait, with
// them left in the kernel. Messages of at most memory.OwnBytes never wait,
// so small messages keep their latency while others send large ones.
//
// Turns go to client addresses in rotation, each address's messages in
// order: an address sending many large messages at once, over many
// connections, waits for its own, while a message from any other address
// is next but a few (in first-come order, 128 connections of one address
// would make every other address wait 2 s and be refused). A nil Intake
// has no rate.
type Intake struct {
	rate  float64 // bytes a second
	burst float64

	mu      sync.Mutex
	tokens  float64 // bytes that may be taken in now
	at      time.Time
	queues  map[string][]*intakeWaiter // waiting messages per address
	order   []string                   // addresses with waiting messages, in turn
	timer   *time.Timer                // armed while messages wait
	waiting int
}

type intakeWaiter struct {
	n     float64
	ready chan struct{} // closed on its turn
}

// NewIntake makes an intake of bytesPerSecond, a quarter second of which
// (at least 8 MiB, room for the largest message) may be taken at once.
func NewIntake(bytesPerSecond int) *Intake {
	burst := float64(max(bytesPerSecond/4, 8<<20))
	return &Intake{rate: float64(bytesPerSecond), burst: burst, tokens: burst, at: time.Now(), queues: map[string][]*intakeWaiter{}}
}

// IntakeRefusal is what a client whose large message does not get its
// turn within maxIntakeWait is told.
var IntakeRefusal = Refusal{Outcome: outcome.Busy, Code: CloseTryAgainLater,
	Reason: "the gateway takes in as many large messages as it may (websocket.large_message_bytes_per_second); retry later"}

// take waits for n bytes of a message from addr to have their turn. It
// reports false when they did not within maxIntakeWait: then nothing is
// taken. A message larger than the burst takes the whole burst.
func (in *Intake) take(addr string, n int64) bool {
	if in == nil {
		return true
	}
	w := &intakeWaiter{n: min(float64(n), in.burst)}
	in.mu.Lock()
	in.refill(time.Now())
	if in.waiting == 0 && in.tokens >= w.n {
		in.tokens -= w.n
		in.mu.Unlock()
		return true
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
	select {
	case <-w.ready:
		return true
	case <-t.C:
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	select {
	case <-w.ready: // its turn came as the wait ended
		return true
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
	in.tokens = min(in.burst, in.tokens+now.Sub(in.at).Seconds()*in.rate)
	in.at = now
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
