package mqttbroker_test

import (
	"crypto/tls"
	"log/slog"
	"testing"
	"time"

	"github.com/wsbridge/wsbridge/broker"
	"github.com/wsbridge/wsbridge/broker/brokertest"
	"github.com/wsbridge/wsbridge/broker/mqttbroker"
)

func TestContract(t *testing.T) {
	brokertest.Run(t, brokertest.Harness{
		New: func(t *testing.T) broker.Broker {
			return mqttbroker.New(mqttbroker.Options{Endpoint: broker.Endpoint{Address: brokertest.Mosquitto(t)}})
		},
		At: func(t *testing.T, addr string) broker.Broker {
			return mqttbroker.New(mqttbroker.Options{Endpoint: broker.Endpoint{Address: addr, DialTimeout: time.Second}})
		},
		// A Mosquitto of the test's own: the shared one admits anyone.
		Refusing: func(t *testing.T) (broker.Broker, string) {
			wrong, password := brokertest.WrongLogin()
			addr := brokertest.MosquittoWithPasswords(t, map[string]string{wrong.Username: password})
			// The refusals' WARN lines are LoginCheck's, tested there.
			return mqttbroker.New(mqttbroker.Options{Endpoint: broker.Endpoint{Address: addr, Credential: wrong,
				Log: slog.New(slog.DiscardHandler)}}), password
		},
	})
}

// Mosquitto behind a TLS terminator.
func TestOverTLS(t *testing.T) {
	brokertest.RunTLS(t, func(t *testing.T, ca *brokertest.CA, conf *tls.Config) broker.Broker {
		return mqttbroker.New(mqttbroker.Options{Endpoint: broker.Endpoint{Address: brokertest.TLSProxy(t, ca, brokertest.Mosquitto(t)), DialTimeout: 2 * time.Second, TLS: conf}})
	})
}

// Against RabbitMQ's MQTT plugin and a RabbitMQ user made for the test.
func TestLogin(t *testing.T) {
	user, password := brokertest.RabbitUser(t)
	brokertest.RunLogin(t, broker.Login{Endpoint: broker.Endpoint{Address: brokertest.RabbitMQTT(t), Backend: "rabbit-mqtt",
		CredentialName: "gw"}, Protocol: "mqtt", Attempt: mqttbroker.Login}, user, password, false)
}
