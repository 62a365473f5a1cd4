package mqtt

import (
	"bytes"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/lxzan/gws"
	"github.com/wsbridge/wsbridge/bridge"
	"github.com/wsbridge/wsbridge/broker/brokertest"
)

// rawConnect is a CONNECT as a client may really send it, whatever an
// encoder would allow: level, connect flags, the MQTT 5 properties (without
// their length) and payload fields, each length-prefixed.
func rawConnect(level, flags byte, props []byte, fields ...string) []byte {
	body := []byte{0, 4, 'M', 'Q', 'T', 'T', level, flags, 0, 60}
	if level == 5 {
		body = append(append(body, byte(len(props))), props...)
	}
	for _, f := range fields {
		body = append(append(body, byte(len(f)>>8), byte(len(f))), f...)
	}
	return append([]byte{0x10, byte(len(body))}, body...)
}

// startRelayTapped serves a relay to Mosquitto through a tap that keeps
// what reached the broker, logging to the returned Logs.
func startRelayTapped(t *testing.T, addr string) (string, *brokertest.TapProxy, *brokertest.Logs) {
	t.Helper()
	tap, logs := brokertest.NewTapProxy(t, addr), &brokertest.Logs{}
	url := brokertest.ServeRoute(t, "/mqtt", slog.New(slog.NewTextHandler(logs, nil)), func(e brokertest.RouteEnv) http.Handler {
		return NewRelay(Options{RouteOptions: bridge.RouteOptions{Route: "/mqtt", Backend: "mosquitto", Address: tap.Addr(),
			Origins: e.Origins, Conns: e.Conns, Log: e.Log, WS: e.WS}})
	})
	return url, tap, logs
}

// A PUBLISH in a WebSocket text message (MQTT-6.0.0-1: binary only) ends
// the connection with 1003, which the client receives, after DISCONNECT
// 0x81 naming the rule in MQTT 5. It never reaches Mosquitto: a subscriber
// there gets the marker published after it, and nothing before.
func TestRelayRefusesTextMessages(t *testing.T) {
	addr := brokertest.Mosquitto(t)
	for _, v := range []byte{4, 5} {
		t.Run(fmt.Sprintf("v%d", v), func(t *testing.T) {
			url, tap, logs := startRelayTapped(t, addr)
			topic := fmt.Sprintf("wsbridge/text/%d", time.Now().UnixNano())
			sub := pahoClient(t, "tcp://"+addr, fmt.Sprintf("text-sub-%d", time.Now().UnixNano()))
			got := make(chan string, 4)
			wait(t, sub.Subscribe(topic, 1, func(_ paho.Client, m paho.Message) { got <- string(m.Payload()) }))

			c := dialRaw(t, url)
			c.send(t, connect(t, v, fmt.Sprintf("text-%d", time.Now().UnixNano())))
			if ack := c.next(t); ack[0] != 0x20 || ack[3] != 0 {
				t.Fatalf("CONNACK %x", ack)
			}
			pub := []byte{0x30, byte(2 + len(topic) + 9), 0, byte(len(topic))}
			pub = append(append(pub, topic...), "text-body"...)
			if v == 5 {
				pub = []byte{0x30, byte(3 + len(topic) + 9), 0, byte(len(topic))}
				pub = append(append(append(pub, topic...), 0), "text-body"...)
			}
			if err := c.conn.WriteMessage(gws.OpcodeText, pub); err != nil {
				t.Fatal(err)
			}
			if v == 5 {
				d := c.next(t)
				if len(d) < 4 || d[0] != 0xE0 || d[2] != 0x81 || !bytes.Contains(d, []byte("MQTT-6.0.0-1")) {
					t.Fatalf("DISCONNECT %x %q, want 0x81 naming MQTT-6.0.0-1", d, d)
				}
			}
			if code := c.closeCode(t); code != bridge.CloseUnsupportedData {
				t.Fatalf("close code %d, want 1003", code)
			}
			logs.WaitFor(t, "MQTT-6.0.0-1")

			marker := pahoClient(t, url, fmt.Sprintf("text-marker-%d", time.Now().UnixNano()))
			wait(t, marker.Publish(topic, 1, false, "marker"))
			select {
			case m := <-got:
				if m != "marker" {
					t.Fatalf("the subscriber got %q: the text message reached the broker", m)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the marker never came")
			}
			tap.Close()
			if strings.Contains(tap.Sent(), "text-body") {
				t.Fatal("the text message's PUBLISH reached the broker")
			}
		})
	}
}

// CONNECTs that the codec took and re-encoded until validate checked every
// rule itself: the client gets the spec's answer and a close it receives,
// the log names the rule, and the broker sees nothing.
func TestRelayRefusesCONNECTsAgainstTheSpec(t *testing.T) {
	addr := brokertest.Mosquitto(t)
	sei := []byte{0x11, 0, 0, 0, 10}
	cases := []struct {
		name   string
		in     []byte
		answer []byte // the CONNACK; nil: none (3.1.1 closes)
		reason string // else: CONNACK 0x82 with this reason string
		code   uint16
		rule   string // in the gateway's log
	}{
		{"5 Session Expiry Interval twice", rawConnect(5, 0x02, append(sei, sei...), "dup-sei"),
			nil, "3.1.2.11.2: CONNECT: Session Expiry Interval more than once", bridge.CloseProtocolError, "3.1.2.11.2"},
		{"5 Session Expiry Interval twice, reason string over the client's Maximum Packet Size", rawConnect(5, 0x02,
			append(append([]byte{0x27, 0, 0, 0, 10}, sei...), sei...), "dup-sei"),
			[]byte{0x20, 0x03, 0x00, 0x82, 0x00}, "", bridge.CloseProtocolError, "3.1.2.11.2"},
		{"3.1.1 password without user name", rawConnect(4, 0x42, nil, "pw-only", "secret"),
			nil, "", bridge.CloseProtocolError, "MQTT-3.1.2-22"},
		{"3.1.1 empty client id without clean session", rawConnect(4, 0x00, nil, ""),
			[]byte{0x20, 0x02, 0x00, 0x02}, "", bridge.CloseProtocolError, "MQTT-3.1.3-8"},
	}
	for _, tt := range cases {
		t.Run(tt.name, func(t *testing.T) {
			url, tap, logs := startRelayTapped(t, addr)
			c := dialRaw(t, url)
			c.send(t, tt.in)
			switch {
			case tt.reason != "":
				// CONNACK 0x82 with a reason string (0x1F) only
				ack := c.next(t)
				want := append([]byte{0x20, byte(6 + len(tt.reason)), 0x00, 0x82, byte(3 + len(tt.reason)), 0x1F, 0, byte(len(tt.reason))}, tt.reason...)
				if !bytes.Equal(ack, want) {
					t.Fatalf("CONNACK %x %q, want %x", ack, ack, want)
				}
			case tt.answer != nil:
				if ack := c.next(t); !bytes.Equal(ack, tt.answer) {
					t.Fatalf("CONNACK %x, want %x", ack, tt.answer)
				}
			}
			if code := c.closeCode(t); code != tt.code {
				t.Fatalf("close code %d, want %d", code, tt.code)
			}
			select {
			case m := <-c.msgs:
				t.Fatalf("an answer where MQTT 3.1.1 has none: %x", m)
			default:
			}
			logs.WaitFor(t, tt.rule)
			tap.Close()
			if sent := tap.Sent(); sent != "" {
				t.Fatalf("the broker was sent %q", sent)
			}
		})
	}
}
