package brokertest

import (
	"testing"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/wsbridge/wsbridge/keyring"
)

// RabbitQueue returns name, a queue the test is about to make on the shared
// RabbitMQ (a STOMP /queue/ destination, a durable subscription, a
// queue.declare), and deletes that queue when the test ends, so that runs
// leave nothing behind. It deletes only this name: other tests on the same
// broker keep theirs.
//
// Call it before starting the gateway or clients that use the queue:
// cleanups run last-registered first, so the deletion then comes after
// they have ended and cannot declare the queue again.
func RabbitQueue(t testing.TB, name string) string {
	t.Helper()
	addr, cred := RabbitAMQP(t), RabbitCredential(t)
	t.Cleanup(func() { deleteQueues(t, addr, cred, name) })
	return name
}

// DeleteRabbitQueues deletes the named queues now, logged in as cred: for
// queues whose names a test learns only at its end (the ones RabbitMQ names
// after a durable subscription). A queue that is not there is no error.
func DeleteRabbitQueues(t testing.TB, cred keyring.Credential, names ...string) {
	t.Helper()
	deleteQueues(t, RabbitAMQP(t), cred, names...)
}

func deleteQueues(t testing.TB, addr string, cred keyring.Credential, names ...string) {
	t.Helper()
	if len(names) == 0 {
		return
	}
	conn, err := amqp.DialConfig("amqp://"+addr+"/", amqp.Config{
		SASL: []amqp.Authentication{&amqp.PlainAuth{Username: cred.Username, Password: cred.Password.Reveal()}}})
	if err != nil {
		t.Errorf("deleting test queues %q: %v", names, err)
		return
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Errorf("deleting test queues %q: %v", names, err)
		return
	}
	for _, name := range names {
		// RabbitMQ answers delete-ok for a queue that is not there, so an
		// error here closed the channel: nothing more can be deleted on it.
		if _, err := ch.QueueDelete(name, false, false, false); err != nil {
			t.Errorf("deleting test queue %s: %v", name, err)
			return
		}
	}
}
