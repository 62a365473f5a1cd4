package front

import (
	"context"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/wsbridge/wsbridge/outcome"
	"golang.org/x/time/rate"
)

// clientIPKey carries the client's address, as the front handler resolved
// it, in a request's context.
type clientIPKey struct{}

// ClientIP is the address of the client behind r: the connection's peer,
// or, when that peer is a trusted proxy, the address it forwarded.
func ClientIP(r *http.Request) string {
	if ip, ok := r.Context().Value(clientIPKey{}).(string); ok {
		return ip
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// Proxies are the addresses whose X-Forwarded-For and Forwarded headers
// are believed.
type Proxies []netip.Prefix

// ParseProxies reads CIDRs or single addresses.
func ParseProxies(list []string) (Proxies, error) {
	var p Proxies
	for _, s := range list {
		if !strings.Contains(s, "/") {
			a, err := netip.ParseAddr(s)
			if err != nil {
				return nil, err
			}
			p = append(p, netip.PrefixFrom(a, a.BitLen()))
			continue
		}
		pf, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, err
		}
		p = append(p, pf.Masked())
	}
	return p, nil
}

func (p Proxies) trusted(a netip.Addr) bool {
	a = a.Unmap()
	for _, pf := range p {
		if pf.Contains(a) {
			return true
		}
	}
	return false
}

// resolve finds the client address: the peer unless it is a trusted proxy;
// then the right-most address in Forwarded (or X-Forwarded-For) that is
// not itself a trusted proxy. A header that does not parse is not
// believed: the proxy's own address stands.
func (p Proxies) resolve(r *http.Request) (netip.Addr, bool) {
	peer, ok := peerAddr(r)
	if !ok || !p.trusted(peer) {
		return peer, ok
	}
	hops := forwardedFor(r.Header.Values("Forwarded"))
	if hops == nil {
		for _, line := range r.Header.Values("X-Forwarded-For") {
			for _, h := range strings.Split(line, ",") {
				hops = append(hops, strings.TrimSpace(h))
			}
		}
	}
	for i := len(hops) - 1; i >= 0; i-- {
		a, err := netip.ParseAddr(hops[i])
		if err != nil {
			return peer, true
		}
		if a = a.Unmap(); !p.trusted(a) {
			return a, true
		}
	}
	return peer, true
}

// peerAddr is the address of the connection's other end.
func peerAddr(r *http.Request) (netip.Addr, bool) {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}, false
	}
	peer, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}, false
	}
	return peer.Unmap(), true
}

// forwardedFor extracts the for= addresses of RFC 7239 Forwarded headers,
// without ports or brackets; nil when there are none.
func forwardedFor(lines []string) []string {
	var out []string
	for _, line := range lines {
		for _, elem := range strings.Split(line, ",") {
			for _, pair := range strings.Split(elem, ";") {
				k, v, ok := strings.Cut(strings.TrimSpace(pair), "=")
				if !ok || !strings.EqualFold(k, "for") {
					continue
				}
				v = strings.Trim(v, `"`)
				if strings.HasPrefix(v, "[") { // [v6]:port
					if end := strings.IndexByte(v, ']'); end > 0 {
						v = v[1:end]
					}
				} else if h, _, err := net.SplitHostPort(v); err == nil {
					v = h
				}
				out = append(out, v)
			}
		}
	}
	return out
}

// rateLimiter allows each client address a handshake rate with a burst.
// It tracks at most maxTracked addresses: idle ones (bucket full again) are
// swept when that is reached.
type rateLimiter struct {
	every rate.Limit
	burst int

	mu      sync.Mutex
	buckets map[string]*rate.Limiter
}

const maxTracked = 1 << 16

func newRateLimiter(perSecond float64, burst int) *rateLimiter {
	if perSecond <= 0 {
		return nil
	}
	if burst < 1 {
		burst = 1
	}
	return &rateLimiter{every: rate.Limit(perSecond), burst: burst, buckets: map[string]*rate.Limiter{}}
}

// allow takes a token for ip, or reports how long until one is free.
func (l *rateLimiter) allow(ip string) (bool, time.Duration) {
	if l == nil {
		return true, 0
	}
	now := time.Now()
	b := l.bucket(ip, now)
	r := b.ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return false, d
	}
	return true, 0
}

// charge takes d's worth of ip's rate (at least one token, at most a
// burst) whether or not it has them: the address's next handshakes wait
// until its bucket has refilled past the debt. The debt is at most one
// burst, so that however many breaches come at once (a NAT's clients
// timing out together on a bad link), the address is refused for at most
// a burst's worth of its rate (10 s at the defaults).
func (l *rateLimiter) charge(ip string, d time.Duration) {
	if l == nil {
		return
	}
	now := time.Now()
	b := l.bucket(ip, now)
	n := min(max(int(float64(l.every)*d.Seconds()), 1), l.burst)
	if room := int(b.TokensAt(now)) + l.burst; room < n {
		n = room
	}
	if n > 0 {
		b.ReserveN(now, n)
	}
}

// bucket is ip's limiter, made when ip has none.
func (l *rateLimiter) bucket(ip string, now time.Time) *rate.Limiter {
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.buckets[ip]
	if !ok {
		if len(l.buckets) >= maxTracked {
			for k, v := range l.buckets {
				if v.TokensAt(now) >= float64(l.burst) {
					delete(l.buckets, k)
				}
			}
			if len(l.buckets) >= maxTracked { // all busy: start over rather than grow
				l.buckets = map[string]*rate.Limiter{}
			}
		}
		b = rate.NewLimiter(l.every, l.burst)
		l.buckets[ip] = b
	}
	return b
}

// front resolves the client address and applies the handshake rate before
// any route runs. The rate is for what opens a connection or stream (GET:
// WebSocket upgrades, SSE streams, the demo page); HTTP publishes, which
// backends may send at a high rate, and /healthz and /readyz are exempt.
// A refused request to a route that is a BusyRefuser is answered by the
// route, so that its clients come back by themselves; others get 429.
func (s *Server) front(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.warnUntrustedForward(r) // before RemoteAddr names the client
		if a, ok := s.opts.TrustedProxies.resolve(r); ok {
			ip := a.String()
			if len(s.opts.TrustedProxies) > 0 {
				_, port, _ := net.SplitHostPort(r.RemoteAddr)
				r.RemoteAddr = net.JoinHostPort(ip, port) // logs name the client, not the proxy
			}
			r = r.WithContext(context.WithValue(r.Context(), clientIPKey{}, ip))
		}
		if r.Method == http.MethodGet && r.URL.Path != "/healthz" && r.URL.Path != "/readyz" {
			if ok, wait := s.rate.allow(ClientIP(r)); !ok {
				b := Busy{Outcome: outcome.RateLimited, Retry: RetryHint(wait), PerAddress: true,
					Reason: "too many connection attempts from this address (limits.handshakes_per_second)"}
				route, _ := s.mux.Handler(r)
				if br, ok := route.(BusyRefuser); ok {
					br.RefuseBusy(w, r, b)
				} else {
					RefuseHTTP(w, b)
				}
				s.log.Info("request refused", "remote", r.RemoteAddr, "path", r.URL.Path, "outcome", b.Outcome, "retry", b.Retry)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// warnUntrustedForward logs, once per server, that a peer not in
// trusted_proxies sends forwarding headers: if it is the operator's own
// proxy or load balancer, every client behind it shares its address, and
// so its per-address limits, until it is listed. Once, because such a
// proxy sends the headers on every request; a client forging them is
// harmless (they are not believed) and gets no log line per request.
func (s *Server) warnUntrustedForward(r *http.Request) {
	if s.forwardWarned.Load() {
		return
	}
	header := "X-Forwarded-For"
	if r.Header.Get(header) == "" {
		if header = "Forwarded"; r.Header.Get(header) == "" {
			return
		}
	}
	peer, ok := peerAddr(r)
	if !ok || s.opts.TrustedProxies.trusted(peer) || !s.forwardWarned.CompareAndSwap(false, true) {
		return
	}
	s.log.Warn("a peer not in trusted_proxies sends "+header+": the per-address limits (limits.handshakes_per_second, "+
		"limits.max_connections_per_ip, limits.password_checks_per_ip) count every client behind it as that one address. "+
		"If it is your proxy or load balancer, add its address or CIDR to trusted_proxies; logged once",
		"peer", peer.String(), "header", header)
}
