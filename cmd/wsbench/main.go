// Command wsbench is wsbridge's load tool: it drives a gateway, the
// brokers' own WebSocket plugins, a bare relay or a broker directly with
// the same load and reports throughput, latency percentiles and lost or
// duplicated messages, as a summary and one JSON line.
//
//	wsbench stomp-pubsub -url ws://127.0.0.1:8080/stomp [-publishers 1] [-subscribers 1] ...
//	wsbench baseline-relay -listen 127.0.0.1:9001 -target 127.0.0.1:61613
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/wsbridge/wsbridge/bridge"
	"github.com/wsbridge/wsbridge/memory"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr, nil))
}

const usage = `usage:
  wsbench stomp-pubsub   -url ws://HOST/stomp | tcp://HOST:61613 [flags]
  wsbench mqtt-pubsub    -url ws://HOST/mqtt | tcp://HOST:1883 [-qos 0|1] [flags]
  wsbench amqp-pubsub    -url ws://HOST/amqp | tcp://HOST:5672 [-exchange amq.topic] [flags]
  wsbench sse-fanout     -url http://HOST:8080 [-clients 1000] [-rate 200] [flags]
  wsbench conns          -url ws://HOST/stomp [-mode upgrade|stomp|mqtt] [-n 1000] [-stats URL | -pid PID]
  wsbench hostile        -url ws://HOST/stomp -kind KIND [-n 2000] [-pid PID | -stats URL]
                         KIND: oversize silent fragments partial-frame slow-publish slow-reader reader-control
  wsbench baseline-relay -listen ADDR -target BROKER:PORT
  wsbench report [-baseline LABEL] [FILE.jsonl ...]   (medians and ratios of labelled runs)
Run a scenario with -h for its flags.
`

// run is main without the process: onListen, for tests, learns where a
// server scenario listens.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, onListen func(net.Addr)) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "stomp-pubsub":
		err = stompPubSubCommand(args[1:], stdout, stderr)
	case "mqtt-pubsub":
		err = mqttPubSubCommand(args[1:], stdout, stderr)
	case "amqp-pubsub":
		err = amqpPubSubCommand(args[1:], stdout, stderr)
	case "sse-fanout":
		err = sseFanoutCommand(args[1:], stdout, stderr)
	case "conns":
		err = connsCommand(args[1:], stdout, stderr)
	case "hostile":
		err = hostileCommand(args[1:], stdout, stderr)
	case "hostile-load": // hostile -split's child process
		err = hostileLoadCommand(os.Stdin, stdout)
	case "baseline-relay":
		err = baselineRelayCommand(ctx, args[1:], stderr, onListen)
	case "report":
		err = reportCommand(args[1:], os.Stdin, stdout, stderr)
	default:
		fmt.Fprint(stderr, usage)
		return 2
	}
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 2
		}
		fmt.Fprintln(stderr, "wsbench:", err)
		return 1
	}
	return 0
}

// pubsubFlags registers the flags the pub/sub scenarios share.
func pubsubFlags(fs *flag.FlagSet, o *pubsubOptions, url string) {
	fs.StringVar(&o.URL, "url", url, "ws:// or wss:// endpoint, or tcp://host:port for the broker itself")
	fs.StringVar(&o.Label, "label", "", "name of the system measured, carried into the JSON line for reports")
	fs.IntVar(&o.Publishers, "publishers", 1, "publishing connections")
	fs.IntVar(&o.Subscribers, "subscribers", 1, "subscribing connections")
	fs.IntVar(&o.Window, "window", 256, "messages in flight per publisher (sent, not yet delivered)")
	fs.Float64Var(&o.Rate, "rate", 0, "messages per second over all publishers; 0 = as fast as the window allows")
	fs.IntVar(&o.BodyBytes, "body", 128, "body size in bytes (at least 40)")
	fs.DurationVar(&o.Duration, "duration", 10*time.Second, "how long to publish")
	fs.DurationVar(&o.Drain, "drain", 5*time.Second, "how long to wait for messages still in flight")
	warmupFlag(fs, &o.Warmup)
}

// warmupFlag registers -warmup: a run's first messages meet connections,
// buffers and the runtime still settling, and would time that instead of
// the system's steady state.
func warmupFlag(fs *flag.FlagSet, d *time.Duration) {
	fs.DurationVar(d, "warmup", time.Second, "at a fixed -rate, messages due this soon after the start are delivered and counted but not timed")
}

// checkWarmup leaves some of a fixed-rate run to time.
func checkWarmup(scenario string, rate float64, warmup, duration time.Duration) error {
	if rate > 0 && (warmup < 0 || warmup >= duration) {
		return fmt.Errorf("%s: -warmup (%s) must be at least 0 and shorter than -duration (%s)", scenario, warmup, duration)
	}
	return nil
}

func (o *pubsubOptions) check(scenario string) error {
	switch {
	case o.Publishers < 1 || o.Subscribers < 1 || o.Window < 1:
		return fmt.Errorf("%s: -publishers, -subscribers and -window must be at least 1", scenario)
	case o.BodyBytes < 40 || o.BodyBytes > 16<<20:
		return fmt.Errorf("%s: -body must be between 40 bytes and 16 MiB", scenario)
	case o.Duration <= 0 || o.Rate < 0:
		return fmt.Errorf("%s: -duration must be positive and -rate not negative", scenario)
	}
	return checkWarmup(scenario, o.Rate, o.Warmup, o.Duration)
}

func stompPubSubCommand(args []string, stdout, stderr io.Writer) error {
	fs, o := pubsubFlagSet("stomp-pubsub", "ws://127.0.0.1:8080/stomp", stderr)
	fs.StringVar(&o.Login, "login", "", "STOMP login (the gateway replaces it; a broker needs one)")
	fs.StringVar(&o.Passcode, "passcode", "", "STOMP passcode")
	fs.StringVar(&o.VHost, "vhost", "/", "STOMP host header (RabbitMQ's virtual host)")
	fs.StringVar(&o.Dest, "dest", "", "destination: /topic/... (each subscriber gets every message) or /queue/...; default a fresh /topic/wsbench.<time>")
	return pubsubCommand(fs, args, o, fmt.Sprintf("/topic/wsbench.%d", time.Now().UnixNano()), runSTOMPPubSub, stdout, stderr)
}

func mqttPubSubCommand(args []string, stdout, stderr io.Writer) error {
	fs, o := pubsubFlagSet("mqtt-pubsub", "ws://127.0.0.1:8080/mqtt", stderr)
	qos := fs.Int("qos", 0, "QoS of publishes and subscriptions: 0 or 1")
	fs.StringVar(&o.Dest, "topic", "", "topic; default a fresh wsbench/<time>")
	return pubsubCommand(fs, args, o, fmt.Sprintf("wsbench/%d", time.Now().UnixNano()), func(o pubsubOptions) (*result, error) {
		if *qos != 0 && *qos != 1 {
			return nil, errors.New("mqtt-pubsub: -qos must be 0 or 1")
		}
		o.Dest = mqttTopic(o.Dest)
		return runMQTTPubSub(o, byte(*qos))
	}, stdout, stderr)
}

func amqpPubSubCommand(args []string, stdout, stderr io.Writer) error {
	fs, o := pubsubFlagSet("amqp-pubsub", "ws://127.0.0.1:8080/amqp", stderr)
	fs.StringVar(&o.Login, "login", "guest", "PLAIN login (the gateway replaces it; a broker needs one)")
	fs.StringVar(&o.Passcode, "passcode", "guest", "PLAIN password")
	fs.StringVar(&o.VHost, "vhost", "/", "virtual host")
	fs.StringVar(&o.Exchange, "exchange", "amq.topic", "topic exchange published to; each subscriber binds its own queue")
	fs.StringVar(&o.Dest, "key", "", "routing key; default a fresh wsbench.<time>")
	return pubsubCommand(fs, args, o, fmt.Sprintf("wsbench.%d", time.Now().UnixNano()), runAMQPPubSub, stdout, stderr)
}

// pubsubFlagSet is a pub/sub scenario's flag set with the shared flags.
func pubsubFlagSet(scenario, url string, stderr io.Writer) (*flag.FlagSet, *pubsubOptions) {
	fs := flag.NewFlagSet(scenario, flag.ContinueOnError)
	fs.SetOutput(stderr)
	o := &pubsubOptions{}
	pubsubFlags(fs, o, url)
	return fs, o
}

// pubsubCommand parses a pub/sub scenario's flags, checks them, names a
// fresh destination unless one was given, runs it and reports.
func pubsubCommand(fs *flag.FlagSet, args []string, o *pubsubOptions, fresh string, run func(pubsubOptions) (*result, error), stdout, stderr io.Writer) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := o.check(fs.Name()); err != nil {
		return err
	}
	if o.Dest == "" {
		o.Dest = fresh
	}
	r, err := run(*o)
	if err != nil {
		return err
	}
	return report(r, stdout, stderr)
}

// report prints the human summary on stderr and the JSON line on stdout.
func report(r interface{ summary() string }, stdout, stderr io.Writer) error {
	fmt.Fprintln(stderr, r.summary())
	line, err := json.Marshal(r)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(stdout, "%s\n", line)
	return err
}

func sseFanoutCommand(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("sse-fanout", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o fanoutOptions
	fs.StringVar(&o.Base, "url", "http://127.0.0.1:8080", "the gateway's base URL")
	fs.StringVar(&o.SSEPath, "sse", "/sse", "path of the SSE route")
	fs.StringVar(&o.PublishPath, "publish", "/publish", "path of the HTTP publish route")
	fs.StringVar(&o.Topic, "topic", "", "topic; default a fresh wsbench.<time>")
	fs.StringVar(&o.Label, "label", "", "name of the system measured, carried into the JSON line for reports")
	fs.IntVar(&o.Clients, "clients", 1000, "SSE streams on the topic")
	fs.IntVar(&o.Publishers, "publishers", 4, "concurrent HTTP publishers sharing the rate")
	fs.Float64Var(&o.Rate, "rate", 200, "messages per second published (each reaches every stream)")
	fs.IntVar(&o.BodyBytes, "body", 128, "body size in bytes (at least 40)")
	fs.DurationVar(&o.Duration, "duration", 10*time.Second, "how long to publish")
	fs.DurationVar(&o.Drain, "drain", 5*time.Second, "how long to wait for deliveries still in flight")
	warmupFlag(fs, &o.Warmup)
	if err := fs.Parse(args); err != nil {
		return err
	}
	switch {
	case o.Clients < 1 || o.Publishers < 1 || o.Rate <= 0 || o.Duration <= 0:
		return errors.New("sse-fanout: -clients, -publishers, -rate and -duration must be positive")
	case o.BodyBytes < 40 || o.BodyBytes > 1<<20:
		return errors.New("sse-fanout: -body must be between 40 bytes and 1 MiB")
	}
	if err := checkWarmup("sse-fanout", o.Rate, o.Warmup, o.Duration); err != nil {
		return err
	}
	if o.Topic == "" {
		o.Topic = fmt.Sprintf("wsbench.%d", time.Now().UnixNano())
	}
	r, err := runSSEFanout(o)
	if err != nil {
		return err
	}
	return report(r, stdout, stderr)
}

func connsCommand(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("conns", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o connsOptions
	fs.StringVar(&o.URL, "url", "ws://127.0.0.1:8080/stomp", "ws:// endpoint")
	fs.StringVar(&o.Label, "label", "", "name of the system measured, carried into the JSON line for reports")
	fs.StringVar(&o.Mode, "mode", "stomp", "after the upgrade: upgrade (nothing), stomp (CONNECT/CONNECTED) or mqtt (CONNECT/CONNACK)")
	fs.IntVar(&o.N, "n", 1000, "connections to open and hold")
	fs.Float64Var(&o.Ramp, "ramp", 1000, "connections started per second")
	fs.IntVar(&o.Concurrency, "concurrency", 64, "handshakes in flight at once")
	fs.IntVar(&o.Sources, "sources", 16, "source addresses 127.0.0.1 ... 127.0.0.N, so more connections than one address's ports fit (and per-address limits hold)")
	fs.DurationVar(&o.Hold, "hold", 5*time.Second, "how long every connection is held idle before the server's RSS is read")
	fs.StringVar(&o.StatsURL, "stats", "", "the gateway's admin /debug/stats URL, to read its RSS")
	fs.BoolVar(&o.GC, "gc", false, "with -stats: also read the gateway's RSS after it collected its garbage (POST /debug/gc), the steady state it reaches by itself within minutes")
	fs.IntVar(&o.PID, "pid", 0, "the server's process id, to read its RSS from /proc (any server)")
	fs.StringVar(&o.Login, "login", "", "STOMP login (a broker's own WebSocket plugin needs one; the gateway replaces it)")
	fs.StringVar(&o.Passcode, "passcode", "", "STOMP passcode")
	if err := fs.Parse(args); err != nil {
		return err
	}
	switch {
	case o.Mode != "upgrade" && o.Mode != "stomp" && o.Mode != "mqtt":
		return errors.New("conns: -mode must be upgrade, stomp or mqtt")
	case o.N < 1 || o.Ramp <= 0 || o.Concurrency < 1 || o.Hold < 0:
		return errors.New("conns: -n, -ramp and -concurrency must be positive, -hold not negative")
	case o.GC && o.StatsURL == "":
		return errors.New("conns: -gc needs -stats (the gateway's admin listener)")
	case o.Sources < 1 || o.Sources > 254:
		return errors.New("conns: -sources must be between 1 and 254")
	}
	r, err := runConns(o)
	if err != nil {
		return err
	}
	return report(r, stdout, stderr)
}

func hostileCommand(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("hostile", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, `usage: wsbench hostile -url ws://HOST:PORT/stomp -kind KIND [flags]

Times a well-behaved STOMP client (the probe) alone, then beside -n hostile
clients of one kind, while reading the gateway's RSS (-pid or -stats):
  oversize        a message over websocket.max_message_bytes, in one frame or fragmented
  silent          upgrades and never logs in (limits.login_timeout)
  fragments       a -size first fragment whose last never comes (websocket.message_timeout)
  partial-frame   a STOMP SEND declaring -size bytes, all but one sent, then a byte a second
  slow-publish    an HTTP publish declaring -size bytes, sent a byte a second
  slow-reader     subscribes to a busy destination and never reads (SO_RCVBUF -rcvbuf)
  reader-control  subscribes to one and reads: the cost of the fan-out itself
Hostile clients that are ended come back after -pause. They connect from
127.0.0.2 ... 127.0.0.<1+sources>, the probe from 127.0.0.1: a gateway's
per-address limits then see -n/-sources clients each. The embedded default's
limits (max_connections_per_ip 2500, handshakes_per_second 100 with a burst
of 1000 per address) take 2,000 clients over 16 sources; for more, or a
gateway with lower limits, raise limits.max_connections,
max_connections_per_ip, handshakes_per_second and handshake_burst.

`)
		fs.PrintDefaults()
	}
	var o hostileOptions
	fs.StringVar(&o.URL, "url", "ws://127.0.0.1:8080/stomp", "the gateway's STOMP route (translate or relay)")
	fs.StringVar(&o.PublishPath, "publish", "/publish", "the gateway's HTTP publish route (slow-publish)")
	fs.StringVar(&o.Label, "label", "", "name of the system measured, carried into the JSON line for reports")
	fs.StringVar(&o.Kind, "kind", "", "hostile kind: "+strings.Join(hostileKinds, ", "))
	fs.IntVar(&o.N, "n", 2000, "hostile clients at once")
	fs.Float64Var(&o.Ramp, "ramp", 1000, "hostile clients started per second")
	fs.IntVar(&o.Concurrency, "concurrency", 64, "handshakes in flight at once")
	fs.IntVar(&o.Sources, "sources", 16, "hostile source addresses 127.0.0.2 ... 127.0.0.<1+N>")
	fs.DurationVar(&o.Baseline, "baseline", 10*time.Second, "how long the probe is timed alone (after a second of settling)")
	fs.DurationVar(&o.Duration, "duration", 20*time.Second, "how long the probe is timed beside the hostile clients, once all are started")
	fs.DurationVar(&o.Pause, "pause", time.Second, "how long an ended hostile client waits before it connects again")
	fs.Float64Var(&o.ProbeRate, "probe-rate", 100, "the probe's round trips per second")
	fs.IntVar(&o.ProbeBody, "probe-body", 64, "the probe's body size in bytes (at least 40)")
	fs.Float64Var(&o.FanoutRate, "fanout-rate", 1, "messages per second to each busy destination (slow-reader, reader-control)")
	fs.IntVar(&o.FanoutBody, "fanout-body", 4<<10, "their body size in bytes")
	fs.IntVar(&o.FanoutTopics, "fanout-topics", 100, "busy destinations, published in turn; hostile client i subscribes to number i%N")
	fs.IntVar(&o.Size, "size", 1<<20, "bytes a hostile fragment, partial STOMP frame or HTTP publish declares (fragments: 512 KiB is apt)")
	fs.IntVar(&o.MaxMessage, "max-message", bridge.DefaultWSOptions().MaxMessageBytes, "the gateway's websocket.max_message_bytes (oversize sends one byte more)")
	fs.IntVar(&o.RcvBuf, "rcvbuf", 4096, "a slow reader's SO_RCVBUF in bytes")
	fs.StringVar(&o.StatsURL, "stats", "", "the gateway's admin /debug/stats URL, to read its RSS")
	fs.IntVar(&o.PID, "pid", 0, "the gateway's process id, to read its RSS from /proc")
	fs.BoolVar(&o.Split, "split", false, "run the hostile clients in a child process, so that the probe is not scheduled behind them")
	fs.DurationVar(&o.Sample, "sample", 100*time.Millisecond, "how often the RSS is read")
	fs.Int64Var(&o.Bound, "bound", 0, "RSS bound in bytes; 0: RSS at rest + -memory-bytes + 128 KiB per connection, as the README documents")
	fs.Int64Var(&o.MemoryBytes, "memory-bytes", memory.DefaultBudgetBytes, "the gateway's limits.memory_bytes, for the bound")
	if err := fs.Parse(args); err != nil {
		return err
	}
	switch {
	case !slices.Contains(hostileKinds, o.Kind):
		return fmt.Errorf("hostile: -kind must be one of %s", strings.Join(hostileKinds, ", "))
	case o.N < 1 || o.Ramp <= 0 || o.Concurrency < 1 || o.ProbeRate <= 0 || o.FanoutRate <= 0 || o.FanoutTopics < 1:
		return errors.New("hostile: -n, -ramp, -concurrency, -probe-rate, -fanout-rate and -fanout-topics must be positive")
	case o.Sources < 1 || o.Sources > 253:
		return errors.New("hostile: -sources must be between 1 and 253")
	case o.Baseline <= 0 || o.Duration <= 0 || o.Pause < 0 || o.Sample <= 0:
		return errors.New("hostile: -baseline, -duration and -sample must be positive, -pause not negative")
	case o.ProbeBody < 40 || o.FanoutBody < 1 || o.Size < 2 || o.MaxMessage < 1:
		return errors.New("hostile: -probe-body must be at least 40, -fanout-body, -size and -max-message positive")
	}
	r, err := runHostile(o)
	if err != nil {
		return err
	}
	return report(r, stdout, stderr)
}

func baselineRelayCommand(ctx context.Context, args []string, stderr io.Writer, onListen func(net.Addr)) error {
	fs := flag.NewFlagSet("baseline-relay", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:9001", "WebSocket listen address")
	target := fs.String("target", "127.0.0.1:61613", "broker host:port every connection is relayed to")
	if err := fs.Parse(args); err != nil {
		return err
	}
	return serveBareRelay(ctx, *listen, *target, slog.New(slog.NewTextHandler(stderr, nil)), onListen)
}
