package front

import (
	"errors"
	"math/rand/v2"
	"net/http"
	"strconv"
	"time"

	"github.com/wsbridge/wsbridge/auth"
	"github.com/wsbridge/wsbridge/outcome"
)

// Retry hints for a client refused for load. A crowd refused together
// (every browser behind one address reconnecting after a restart) must not
// come back together, so each is told a delay drawn evenly from
// [RetryMin, RetryMin+RetrySpread): the refused share of a crowd returns
// spread over RetrySpread, and each return finds the handshake bucket a
// little fuller. Browsers' EventSource follows the hint by itself; a page
// can read it from a WebSocket close reason.
const (
	RetryMin    = time.Second
	RetrySpread = 4 * time.Second
)

// BreachCost is what a breach (bridge.WSOptions.Penalize) costs its client
// address, in time of its handshake rate: at the default rate, 100
// handshakes. An address whose clients reconnect to breach again and
// again is held to about one breach a second, while the handshakes it
// tries meanwhile are refused before the upgrade (a 101 and close 1013 in
// one write) instead of each costing a session that reads up to a 1 MiB
// message. A quarter second let 2,000 clients sending partial 1 MiB
// frames from 16 addresses keep the probe's p99 at 41x its own beside
// them; a second, at 8x (docs/benchmarks.md, Hostile clients). Clients
// behind the same address (a NAT, a proxy without trusted_proxies) share
// what is left of its rate, refused meanwhile with a retry hint: a
// hostile client among them that reconnects as fast as it is refused
// takes most of the handshakes that come free, which no per-address limit
// can prevent.
const BreachCost = time.Second

// Penalize charges client's handshake rate BreachCost for a breach; it
// is the server's bridge.WSOptions.Penalize.
func (s *Server) Penalize(client string) { s.rate.charge(client, BreachCost) }

// Busy is a refusal for load: nothing is wrong with the request, and the
// client is to come back after Retry.
type Busy struct {
	Outcome outcome.Outcome // for the log line: rate_limited, over_capacity, busy
	Reason  string          // for the client: names the limit
	Retry   time.Duration   // when to come back (RetryHint)
	// PerAddress: the client's own address is over a limit (HTTP 429),
	// not the gateway as a whole (503); for answers that carry a status.
	PerAddress bool
}

// BusyRefuser is a route that answers a request refused for load in a way
// its clients follow by themselves: a WebSocket route with close 1013, an
// SSE route with a stream that sets EventSource's retry and ends. The
// server's handshake rate hands its refusals to the route when the route
// is one.
type BusyRefuser interface {
	RefuseBusy(w http.ResponseWriter, r *http.Request, b Busy)
}

// RetryHint is a jittered delay after which a refused client may come
// back: at least least (what the limit itself needs), and at least
// RetryMin, plus up to RetrySpread. It is rounded to 100 ms, which is as
// fine as a retry can usefully be.
func RetryHint(least time.Duration) time.Duration {
	return (max(least, RetryMin) + rand.N(RetrySpread)).Round(100 * time.Millisecond)
}

// BusyFor is the refusal for err when err is one for load: a connection
// limit (ErrFull, ErrIPFull from Conns) or a password check refused
// unchecked (auth.ErrBusy). ok is false for any other error.
func BusyFor(err error) (b Busy, ok bool) {
	var ae *auth.Error
	switch {
	case errors.Is(err, ErrIPFull):
		return Busy{Outcome: outcome.OverCapacity, Reason: err.Error(), Retry: RetryHint(0), PerAddress: true}, true
	case errors.Is(err, ErrFull):
		return Busy{Outcome: outcome.OverCapacity, Reason: err.Error(), Retry: RetryHint(0)}, true
	case errors.As(err, &ae) && errors.Is(err, auth.ErrBusy):
		return Busy{Outcome: outcome.Busy, Reason: err.Error(), Retry: RetryHint(ae.RetryAfter), PerAddress: true}, true
	}
	return Busy{}, false
}

// RefuseHTTP answers b with 429 (the address's own limit) or 503, and
// Retry-After in whole seconds: for clients that read HTTP statuses.
func RefuseHTTP(w http.ResponseWriter, b Busy) {
	status := http.StatusServiceUnavailable
	if b.PerAddress {
		status = http.StatusTooManyRequests
	}
	w.Header().Set("Retry-After", strconv.Itoa(int((b.Retry+time.Second-1)/time.Second)))
	Error(w, status, b.Reason)
}

// CloseReason is b as a WebSocket close reason: the reason, then the hint
// in seconds, in a form a page can parse ("; retry in 2.4s", never
// "1m40s"), within the 123 bytes a close frame allows.
func (b Busy) CloseReason() string {
	hint := "; retry in " + strconv.FormatFloat(b.Retry.Seconds(), 'f', -1, 64) + "s"
	reason := b.Reason
	if len(reason)+len(hint) > 123 {
		reason = reason[:123-len(hint)]
	}
	return reason + hint
}
