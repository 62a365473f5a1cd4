package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// e2eDir holds the real JavaScript clients (npm ci --prefix testdata/e2e).
const e2eDir = "../../testdata/e2e"

func requireNodeClients(t *testing.T) {
	t.Helper()
	_, errNode := exec.LookPath("node")
	_, errMods := os.Stat(filepath.Join(e2eDir, "node_modules", "@stomp", "stompjs"))
	if errNode != nil || errMods != nil {
		msg := "node or the e2e clients are missing: run `npm ci --prefix testdata/e2e`"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
}

// @stomp/stompjs, as a web page would use it, through the gateway to the
// real RabbitMQ, with no broker credential on the client side.
func TestStompJSThroughGateway(t *testing.T) {
	requireNodeClients(t)
	g, cred := serveRabbitMQExample(t)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	queue := fmt.Sprintf("/queue/wsbridge-stompjs-%d", time.Now().UnixNano())
	out, err := exec.CommandContext(ctx, "node", filepath.Join(e2eDir, "stompjs.mjs"), "ws://"+g.addr+"/stomp", queue).CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "OK version=1.2") {
		t.Fatalf("stompjs: %v\n%s\ngateway logs:\n%s", err, out, g.logs)
	}
	t.Logf("stompjs: %s", strings.TrimSpace(string(out)))
	if strings.Contains(g.logs.String(), cred.Password.Reveal()) {
		t.Fatal("the broker password reached the logs")
	}
}
