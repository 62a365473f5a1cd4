// Sizes, rates and timeouts: each key's default and the range it must
// fall in, in one place.

package main

import (
	"time"

	"github.com/wsbridge/wsbridge/auth"
	"github.com/wsbridge/wsbridge/bridge"
	"github.com/wsbridge/wsbridge/front"
	"github.com/wsbridge/wsbridge/memory"
	"github.com/wsbridge/wsbridge/sse"
	"github.com/wsbridge/wsbridge/validate"
)

// checkSizes fills the default of each size, rate and timeout left unset
// (zero) and checks the range of each that is set.
func (cfg *Config) checkSizes(c *checker) {
	ws, d := &cfg.WebSocket, bridge.DefaultWSOptions()
	c.intIn("websocket.max_message_bytes", &ws.MaxMessageBytes, d.MaxMessageBytes, 1<<10, 64<<20)
	c.intIn("websocket.read_buffer_bytes", &ws.ReadBufferBytes, d.ReadBufferBytes, 512, 1<<20)
	c.durIn("websocket.ping_interval", &ws.PingInterval, d.PingInterval, time.Second, time.Hour)
	c.durIn("websocket.write_timeout", &ws.WriteTimeout, d.WriteTimeout, 100*time.Millisecond, 5*time.Minute)
	c.durIn("websocket.handshake_timeout", &ws.HandshakeTimeout, d.HandshakeTimeout, 100*time.Millisecond, time.Minute)
	c.durIn("websocket.message_timeout", &ws.MessageTimeout, d.MessageTimeout, 100*time.Millisecond, 10*time.Minute)
	c.intIn("websocket.large_message_bytes_per_second", &ws.LargeMessageBytesPerSecond, bridge.DefaultIntakeBytesPerSecond, 1<<20, 1<<40)
	// Below it the largest message, fragmented (booked twice), could not
	// have its turn within the 2 s it may wait, even alone.
	if r, m := ws.LargeMessageBytesPerSecond, ws.MaxMessageBytes; r < 4*m {
		c.fail("websocket.large_message_bytes_per_second", "%d is less than 4 x websocket.max_message_bytes (%d): the largest message could not be taken in within 2 s", r, 4*m)
	}
	c.intIn("websocket.linger_bytes_per_second", &ws.LingerBytesPerSecond, bridge.DefaultLingerBytesPerSecond, 64<<10, 1<<30)
	// A pointer, so that an explicit 0 (the kernel's autotuning) differs
	// from silence (the default).
	if ws.SendBufferBytes == nil {
		ws.SendBufferBytes = &d.SendBufferBytes
	} else if v := *ws.SendBufferBytes; v != 0 && (v < 4<<10 || v > 64<<20) {
		c.fail("websocket.send_buffer_bytes", "%d is not 0 (the kernel's autotuning) or between %d and %d", v, 4<<10, 64<<20)
	}

	sc, sd := &cfg.SSE, sse.DefaultOptions()
	c.durIn("sse.heartbeat", &sc.Heartbeat, sd.Heartbeat, 100*time.Millisecond, 10*time.Minute)
	c.durIn("sse.retry", &sc.Retry, sd.Retry, 100*time.Millisecond, 10*time.Minute)
	c.intIn("sse.replay_events", &sc.ReplayEvents, sd.Replay, 1, 1<<20)
	c.intIn("sse.replay_bytes", &sc.ReplayBytes, int(sd.ReplayBytes), 1<<10, 1<<30)
	c.intIn("sse.client_queue_events", &sc.ClientQueueEvents, sd.ClientQueue, 1, 1<<20)
	c.intIn("sse.client_queue_bytes", &sc.ClientQueueBytes, int(sd.ClientQueueBytes), 1<<10, 1<<30)
	c.intIn("sse.max_live_topics", &sc.MaxLiveTopics, sd.MaxLiveTopics, 1, 10_000_000)
	c.durIn("sse.linger", &sc.Linger, sd.Linger, time.Millisecond, time.Hour)
	if sc.FlushInterval == nil {
		d := Duration(sd.FlushInterval)
		sc.FlushInterval = &d
	} else if v := time.Duration(*sc.FlushInterval); v > time.Second {
		c.fail("sse.flush_interval", "%s is out of range [0s, 1s]", v)
	}
	c.intIn("sse.max_topics_per_stream", &sc.MaxTopicsPerStream, sd.MaxTopics, 1, 1024)
	c.intIn("sse.max_publish_bytes", &sc.MaxPublishBytes, sd.MaxPublishBytes, 1, 64<<20)

	so := front.DefaultServerOptions()
	c.intIn("limits.max_connections", &cfg.Limits.MaxConnections, so.MaxConns, 1, 10_000_000)
	c.intIn("limits.max_connections_per_ip", &cfg.Limits.MaxConnectionsPerIP, so.MaxConnsPerIP, 1, 10_000_000)
	if hs := &cfg.Limits.HandshakesPerSecond; *hs == 0 {
		*hs = so.HandshakeRate
	} else if *hs < 0.01 || *hs > 1e6 {
		c.fail("limits.handshakes_per_second", "%g is out of range [0.01, 1000000]", *hs)
	}
	c.intIn("limits.handshake_burst", &cfg.Limits.HandshakeBurst, so.HandshakeBurst, 1, 1_000_000)
	c.intIn("limits.memory_bytes", &cfg.Limits.MemoryBytes, memory.DefaultBudgetBytes, 1<<20, 1<<40)
	if lt := &cfg.Limits.LoginTimeout; *lt == nil {
		v := Duration(d.LoginTimeout)
		*lt = &v
	} else if v := time.Duration(**lt); v < 100*time.Millisecond || v > 5*time.Minute {
		c.fail("limits.login_timeout", "%s is out of range [100ms, 5m0s]; there is no \"off\": a connection that has not logged in holds a slot and must end (default %s)", v, d.LoginTimeout)
	}
	hl := auth.DefaultHashLimits()
	c.intIn("limits.password_checks", &cfg.Limits.PasswordChecks, hl.Concurrent, 1, 1024)
	c.intIn("limits.password_checks_per_ip", &cfg.Limits.PasswordChecksPerIP, hl.PerClient, 1, 1_000_000)
	c.durIn("limits.password_check_wait", &cfg.Limits.PasswordCheckWait, hl.Wait, time.Millisecond, time.Minute)
	sl := &cfg.Limits.STOMP
	// A frame as large as the largest message: what a client sends in
	// one WebSocket message, STOMP carries in one frame.
	c.intIn("limits.stomp.max_frame_bytes", &sl.MaxFrameBytes, validate.DefaultSTOMPLimits().MaxFrameBytes, 256, 64<<20)
	c.intIn("limits.stomp.max_headers", &sl.MaxHeaders, 64, 1, 10000)
	c.intIn("limits.stomp.max_header_line_bytes", &sl.MaxHeaderLineBytes, 8<<10, 64, 1<<20)
	c.intIn("limits.stomp.max_broker_frame_bytes", &sl.MaxBrokerFrameBytes, 16<<20, 1<<10, 1<<30)
	ml := &cfg.Limits.MQTT
	c.intIn("limits.mqtt.max_packet_bytes", &ml.MaxPacketBytes, validate.DefaultMQTTLimits().MaxPacketBytes, 16, 256<<20)
	c.intIn("limits.mqtt.max_broker_packet_bytes", &ml.MaxBrokerPacketBytes, 16<<20, 1<<10, 256<<20)
	al, ad := &cfg.Limits.AMQP, validate.DefaultAMQPLimits()
	c.intIn("limits.amqp.max_frame_bytes", &al.MaxFrameBytes, ad.MaxFrameBytes, validate.AMQPMinFrameMax, 64<<20)
	c.intIn("limits.amqp.max_channels", &al.MaxChannels, ad.MaxChannels, 1, 65535)
	c.intIn("limits.amqp.max_table_depth", &al.MaxTableDepth, ad.MaxTableDepth, 1, 64)
}

// intIn fills *v with def when unset, else checks it is in [lo, hi].
func (c *checker) intIn(path string, v *int, def, lo, hi int) {
	if *v == 0 {
		*v = def
		return
	}
	if *v < lo || *v > hi {
		c.fail(path, "%d is out of range [%d, %d]", *v, lo, hi)
	}
}

// durIn fills *v with def when unset, else checks it is in [lo, hi].
func (c *checker) durIn(path string, v *Duration, def, lo, hi time.Duration) {
	if *v == 0 {
		*v = Duration(def)
		return
	}
	if time.Duration(*v) < lo || time.Duration(*v) > hi {
		c.fail(path, "%s is out of range [%s, %s]", time.Duration(*v), lo, hi)
	}
}
