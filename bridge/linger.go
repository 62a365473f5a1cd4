package bridge

import (
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// DefaultLingerBytesPerSecond is websocket.linger_bytes_per_second where
// the config is silent: a 1 MiB message refused mid-flight is drained in
// a sixty-fourth of it, so dozens of clients a second over a limit still
// get their close frame, while a flood of them (2,000 clients pushing
// 1 MiB each a second: 2 GB/s) costs the gateway a few percent of a core
// instead of all of it.
const DefaultLingerBytesPerSecond = 64 << 20

// Linger is the process-wide budget of lingering closes: the bytes a
// second the gateway reads and drops from clients it has closed while they
// were still sending, so that their stacks read the close frame rather
// than the reset that closing a socket with unread data sends. Past it a
// close no longer lingers: the socket is closed after the close frame, and
// a client still sending may see 1006 instead of its close code. A nil
// Linger lets every close linger (up to lingerTime and lingerBytes each).
//
// An address refused more than lingerRepeats times within lingerWindow is
// a repeat offender: its refusals no longer linger until the window ends,
// so that one address's flood does not spend the budget that clients
// elsewhere need to receive their close frames.
type Linger struct {
	lim *rate.Limiter

	mu      sync.Mutex
	since   time.Time      // the window's start
	refused map[string]int // refusals per address in the window
}

// Repeat offenders. The addresses counted are bounded by lingerAddrs per
// window (~100 KiB); past it new ones are not counted, and linger.
const (
	lingerRepeats = 16
	lingerWindow  = 10 * time.Second
	lingerAddrs   = 4096
)

// NewLinger makes a linger budget of bytesPerSecond, which may all be
// spent at once.
func NewLinger(bytesPerSecond int) *Linger {
	return &Linger{lim: rate.NewLimiter(rate.Limit(bytesPerSecond), bytesPerSecond), refused: map[string]int{}}
}

// refusal counts a refusal of a client from addr and reports whether its
// close may linger: not for a repeat offender.
func (l *Linger) refusal(addr string) bool {
	if l == nil {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if now := time.Now(); now.Sub(l.since) > lingerWindow {
		clear(l.refused)
		l.since = now
	}
	n, seen := l.refused[addr]
	if !seen && len(l.refused) >= lingerAddrs {
		return true
	}
	l.refused[addr] = n + 1
	return n < lingerRepeats
}

// take spends n drained bytes; false when the budget cannot spare them.
func (l *Linger) take(n int) bool {
	return l == nil || n == 0 || l.lim.AllowN(time.Now(), n)
}

// Drain buffers: a read into 64 KiB takes up to 16 times fewer syscalls
// than one into 4 KiB, and a drain costs its syscalls. At most
// lingerBufCount are in use at once (4 MiB in all); a drain that finds
// none free reads into its own 4 KiB.
const (
	lingerBufBytes = 64 << 10
	lingerBufCount = 64
)

var (
	lingerBufs     = sync.Pool{New: func() any { return new([lingerBufBytes]byte) }}
	lingerBufsUsed atomic.Int32
)

// lingerBuf lends a drain buffer; give it back with putLingerBuf. nil
// when all are lent.
func lingerBuf() *[lingerBufBytes]byte {
	if lingerBufsUsed.Add(1) > lingerBufCount {
		lingerBufsUsed.Add(-1)
		return nil
	}
	return lingerBufs.Get().(*[lingerBufBytes]byte)
}

func putLingerBuf(b *[lingerBufBytes]byte) {
	lingerBufs.Put(b)
	lingerBufsUsed.Add(-1)
}
