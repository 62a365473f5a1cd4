package bridge

import (
	"time"

	"github.com/wsbridge/wsbridge/outcome"
	"golang.org/x/time/rate"
)

// DefaultIntakeBytesPerSecond is websocket.large_message_bytes_per_second
// where the config is silent. Taking in a large message costs the gateway
// ~2 ms of CPU per MiB (the read, gws's copy and unmasking, the page
// faults of fresh memory), and on a small box sessions share one core: a
// thousand clients sending 512 KiB at once held it for ~0.5 s, and every
// other client's round trip waited that long (2,000 clients doing it
// again and again put a well-behaved client's p99 at 100-270x alone;
// at this rate 3-7x, docs/benchmarks.md). 64 MiB/s is a 1 MiB message
// every 16 ms, as fast as one real client sends them here
// (docs/sizes.md: 15-18 ms a 1 MiB round trip).
const DefaultIntakeBytesPerSecond = 64 << 20

// maxIntakeWait is the longest a large message waits for its turn; a
// client that would wait longer is refused with 1013 at once.
const maxIntakeWait = 2 * time.Second

// Intake is the process-wide rate at which the gateway takes in large
// WebSocket messages: what a message being assembled beyond
// memory.OwnBytes is charged to the memory budget is also booked here,
// and the read of its bytes waits its turn, up to maxIntakeWait. Messages
// of at most memory.OwnBytes never wait, so small messages keep their
// latency while others send large ones. A nil Intake has no rate.
type Intake struct {
	lim   *rate.Limiter
	burst int
}

// NewIntake makes an intake of bytesPerSecond, a quarter second of which
// (at least 8 MiB, room for the largest message) may be taken at once.
func NewIntake(bytesPerSecond int) *Intake {
	burst := max(bytesPerSecond/4, 8<<20)
	return &Intake{lim: rate.NewLimiter(rate.Limit(bytesPerSecond), burst), burst: burst}
}

// IntakeRefusal is what a client whose large message cannot have its
// turn within maxIntakeWait is told.
var IntakeRefusal = Refusal{Outcome: outcome.Busy, Code: CloseTryAgainLater,
	Reason: "the gateway takes in as many large messages as it may (websocket.large_message_bytes_per_second); retry later"}

// book books n bytes. It returns how long the read must wait for them,
// a cancel that gives them back, and false when the wait would be longer
// than maxIntakeWait (then nothing is booked). A message larger than the
// burst books the whole burst.
func (in *Intake) book(n int64) (wait time.Duration, cancel func(), ok bool) {
	if in == nil {
		return 0, func() {}, true
	}
	r := in.lim.ReserveN(time.Now(), int(min(n, int64(in.burst))))
	if !r.OK() {
		return 0, nil, false
	}
	if wait = r.Delay(); wait > maxIntakeWait {
		r.Cancel()
		return 0, nil, false
	}
	return wait, r.Cancel, true
}
