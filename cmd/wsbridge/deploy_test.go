package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/wsbridge/wsbridge/broker/brokertest"
	"github.com/wsbridge/wsbridge/keyring"
	"go.yaml.in/yaml/v3"
)

// The files Docker reads, checked by rule since no engine is needed to
// read them (and none may be here): docker-compose.yml is linted by
// `docker-compose config` in CI too.
const (
	dockerfilePath  = "Dockerfile"
	composePath     = "../../docker-compose.yml"
	composeConfig   = "../../testdata/compose.yaml"
	composeInit     = "../../testdata/compose-init.sh"
	enabledPlugins  = "../../testdata/rabbitmq/enabled_plugins"
	healthcheckPath = "http://127.0.0.1:8080/readyz"
)

// pinnedImage is NAME:VERSION@sha256:DIGEST: the tag says which version a
// reader gets, the digest that a rebuild gets the same bytes.
var pinnedImage = regexp.MustCompile(`^([a-z0-9./-]+):([A-Za-z0-9._-]+)@sha256:[0-9a-f]{64}$`)

// patchVersionImage is NAME:X.Y.Z[-variant]: the example's broker image,
// whose digest nobody here could check (a wrong digest fails every pull),
// pinned to a patch release instead.
var patchVersionImage = regexp.MustCompile(`^([a-z0-9./-]+):[0-9]+\.[0-9]+\.[0-9]+(-[a-z]+)?$`)

// secretName is an ENV or ARG name that would bake a secret into an image
// (every layer and `docker inspect` show them).
var secretName = regexp.MustCompile(`(?i)pass|secret|token|key|credential`)

type dockerInstr struct {
	line      int
	cmd, args string
}

// dockerfileStages splits a Dockerfile into its stages' instructions,
// joining continued lines and dropping comments.
func dockerfileStages(t *testing.T, path string) [][]dockerInstr {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var stages [][]dockerInstr
	var cur string
	start := 0
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if cur == "" && (line == "" || strings.HasPrefix(line, "#")) {
			continue
		}
		if cur == "" {
			start = n
		}
		if strings.HasSuffix(line, `\`) {
			cur += strings.TrimSuffix(line, `\`) + " "
			continue
		}
		cur += line
		cmd, args, _ := strings.Cut(cur, " ")
		in := dockerInstr{start, strings.ToUpper(cmd), strings.TrimSpace(args)}
		if in.cmd == "FROM" {
			stages = append(stages, nil)
		}
		if len(stages) == 0 {
			t.Fatalf("%s:%d: %s before the first FROM", path, start, in.cmd)
		}
		stages[len(stages)-1] = append(stages[len(stages)-1], in)
		cur = ""
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return stages
}

// goVersion is go.mod's go line: the toolchain the build image must have.
func goVersion(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^go (\S+)$`).FindSubmatch(b)
	if m == nil {
		t.Fatal("go.mod has no go line")
	}
	return string(m[1])
}

func TestDockerfileRules(t *testing.T) {
	stages := dockerfileStages(t, dockerfilePath)
	if len(stages) < 2 {
		t.Fatalf("%s: want a build stage and a runtime stage, got %d stages", dockerfilePath, len(stages))
	}
	var aliases []string
	for i, stage := range stages {
		from := stage[0]
		fields := strings.Fields(from.args)
		image := fields[0]
		if len(fields) == 3 && strings.EqualFold(fields[1], "AS") {
			defer func(alias string) { aliases = append(aliases, alias) }(fields[2])
		}
		if slices.Contains(aliases, image) {
			continue
		}
		m := pinnedImage.FindStringSubmatch(image)
		switch {
		case m == nil:
			t.Errorf("%s:%d: FROM %s is not pinned as NAME:VERSION@sha256:DIGEST", dockerfilePath, from.line, image)
		case m[2] == "latest" || !regexp.MustCompile(`\d`).MatchString(path.Base(m[1])+":"+m[2]):
			// distroless has no versioned tags: its name carries the Debian release.
			t.Errorf("%s:%d: FROM %s names no version", dockerfilePath, from.line, image)
		case m[1] == "golang" && !strings.HasPrefix(m[2], goVersion(t)+"-") && m[2] != goVersion(t):
			t.Errorf("%s:%d: FROM %s does not match go.mod's go %s", dockerfilePath, from.line, image, goVersion(t))
		}
		toolchainLocal := false
		user := ""
		for _, in := range stage {
			switch in.cmd {
			case "ENV", "ARG":
				for _, kv := range strings.Fields(in.args) {
					name, value, _ := strings.Cut(kv, "=")
					if secretName.MatchString(name) {
						t.Errorf("%s:%d: %s %s would bake a secret into the image", dockerfilePath, in.line, in.cmd, name)
					}
					if name == "GOTOOLCHAIN" && value == "local" {
						toolchainLocal = true
					}
				}
			case "USER":
				user = in.args
			case "ADD":
				t.Errorf("%s:%d: ADD fetches or unpacks; COPY says what it does", dockerfilePath, in.line)
			}
		}
		if m != nil && m[1] == "golang" && !toolchainLocal {
			t.Errorf("%s: the golang stage does not set GOTOOLCHAIN=local: go may download a toolchain go.mod asks for", dockerfilePath)
		}
		if i == len(stages)-1 {
			name, _, _ := strings.Cut(user, ":")
			if name == "" || name == "root" || name == "0" {
				t.Errorf("%s: the runtime stage runs as %q; want an explicit non-root USER", dockerfilePath, user)
			}
		}
	}
}

// composeFile is what TestComposeRules reads of docker-compose.yml.
type composeFile struct {
	Services map[string]struct {
		Image       string            `yaml:"image"`
		Entrypoint  []string          `yaml:"entrypoint"`
		Environment map[string]string `yaml:"environment"`
		Volumes     []string          `yaml:"volumes"`
		Ports       []string          `yaml:"ports"`
		Healthcheck struct {
			Test []string `yaml:"test"`
		} `yaml:"healthcheck"`
	} `yaml:"services"`
}

func TestComposeRules(t *testing.T) {
	b, err := os.ReadFile(composePath)
	if err != nil {
		t.Fatal(err)
	}
	var c composeFile
	if err := yaml.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	for name, s := range c.Services {
		if s.Image != "" && pinnedImage.FindStringSubmatch(s.Image) == nil && !patchVersionImage.MatchString(s.Image) {
			t.Errorf("service %s: image %s is pinned neither as NAME:VERSION@sha256:DIGEST nor to a patch release", name, s.Image)
		}
		for _, p := range s.Ports {
			if !strings.HasPrefix(p, "127.0.0.1:") {
				t.Errorf("service %s: port %s is published on every interface; the example publishes on loopback", name, p)
			}
		}
	}
	gw, ok := c.Services["wsbridge"]
	if !ok {
		t.Fatal("no wsbridge service")
	}
	if len(gw.Environment) != 0 {
		t.Errorf("the gateway's environment holds %v: it needs none, and a secret there is in `docker inspect`", gw.Environment)
	}
	if want := []string{"CMD", "/usr/local/bin/wsbridge", "healthcheck", healthcheckPath}; !slices.Equal(gw.Healthcheck.Test, want) {
		t.Errorf("gateway healthcheck %q, want %q", gw.Healthcheck.Test, want)
	}

	// The keyring and its master key: in two volumes, read-only for the
	// gateway, at the paths its config names.
	cfg, err := loadConfig(composeConfig)
	if err != nil {
		t.Fatal(err)
	}
	mounts := map[string]string{} // container dir -> volume
	for _, v := range gw.Volumes {
		parts := strings.Split(v, ":")
		if len(parts) != 3 || parts[2] != "ro" {
			t.Errorf("gateway volume %q is not read-only", v)
			continue
		}
		mounts[parts[1]] = parts[0]
	}
	keyringVol, keyVol := mounts[filepath.Dir(cfg.Keyring.Path)], mounts[filepath.Dir(cfg.Keyring.KeyFile)]
	if keyringVol == "" || keyVol == "" || keyringVol == keyVol {
		t.Errorf("keyring %s and master key %s: want each in a volume of its own, got %v", cfg.Keyring.Path, cfg.Keyring.KeyFile, mounts)
	}

	// testdata/compose.yaml serves what the README shows: the demo, STOMP,
	// SSE and publish.
	var protocols []string
	for _, r := range cfg.Routes {
		protocols = append(protocols, r.Protocol)
	}
	for _, want := range []string{"stomp", "sse", "publish"} {
		if !slices.Contains(protocols, want) {
			t.Errorf("%s serves no %s route", composeConfig, want)
		}
	}
	if !cfg.Demo {
		t.Errorf("%s does not serve the demo page", composeConfig)
	}

	// This file replaces the image's list: keep its management plugin.
	plugins, err := os.ReadFile(enabledPlugins)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"rabbitmq_management", "rabbitmq_prometheus", "rabbitmq_stomp"} {
		if !strings.Contains(string(plugins), want) {
			t.Errorf("%s lacks %s", enabledPlugins, want)
		}
	}

	init, ok := c.Services["init"]
	if !ok || !slices.Contains(init.Entrypoint, "/src/testdata/compose-init.sh") {
		t.Errorf("no init service running testdata/compose-init.sh: %+v", init)
	}
}

// initRun is one run of testdata/compose-init.sh in a scratch directory.
type initRun struct {
	dir, bin   string
	gw, admin  string // RabbitMQ user names, unique per test
	adminPass  string
	stdout     string
	stderr     string
	exitStatus int
}

func (r *initRun) path(name string) string { return filepath.Join(r.dir, name) }

func (r *initRun) run(t *testing.T, adminPass string) {
	t.Helper()
	cmd := exec.Command("sh", composeInit)
	cmd.Env = append(os.Environ(),
		"WSBRIDGE="+r.bin,
		"KEYRING="+r.path("keyring/wsbridge.keyring"),
		"KEY_FILE="+r.path("key/master.key"),
		"DEFINITIONS="+r.path("definitions/definitions.json"),
		"GATEWAY_USER="+r.gw, "ADMIN_USER="+r.admin,
		"GATEWAY_UID="+fmt.Sprint(os.Getuid()), "BROKER_UID="+fmt.Sprint(os.Getuid()),
		"BROKER_ADMIN_PASSWORD="+adminPass,
	)
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	r.stdout, r.stderr, r.exitStatus = out.String(), errOut.String(), cmd.ProcessState.ExitCode()
	if err != nil && cmd.ProcessState == nil {
		t.Fatal(err)
	}
}

func newInitRun(t *testing.T, bin string) *initRun {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{"keyring", "key", "definitions"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	suffix := randomHex(t, 6)
	return &initRun{dir: dir, bin: bin, gw: "wsbridge_compose_" + suffix, admin: "admin_compose_" + suffix}
}

func randomHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// buildWsbridge builds the CLI the init script runs.
func buildWsbridge(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "wsbridge")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// rabbitmqctl runs on this machine's RabbitMQ, where the tests' broker is.
func rabbitmqctl(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	cmd := exec.Command("rabbitmqctl", args...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("rabbitmqctl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// The compose init script against this machine's RabbitMQ: its definitions
// load, the gateway logs in with the password only the keyring holds, the
// administrator with BROKER_ADMIN_PASSWORD, and testdata/compose.yaml's
// demo, STOMP, SSE and publish work under the gateway user's permissions
// while what it does not need (a /queue/ destination) is refused. A failed
// step fails the script and writes no definitions.
func TestComposeInitAgainstRabbitMQ(t *testing.T) {
	stompAddr := brokertest.RabbitSTOMP(t)
	amqpAddr := brokertest.RabbitAMQP(t)
	if _, err := exec.LookPath("rabbitmqctl"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("rabbitmqctl not installed: it loads the init script's definitions")
		}
		t.Skip("rabbitmqctl not installed (it loads the init script's definitions into the RabbitMQ at WSBRIDGE_TEST_AMQP_ADDR)")
	}
	bin := buildWsbridge(t)

	t.Run("no admin password", func(t *testing.T) {
		r := newInitRun(t, bin)
		r.run(t, "")
		if r.exitStatus == 0 || !strings.Contains(r.stderr, "BROKER_ADMIN_PASSWORD") {
			t.Fatalf("exit %d, stderr %q: want a failure naming BROKER_ADMIN_PASSWORD", r.exitStatus, r.stderr)
		}
	})
	t.Run("failed keyring set", func(t *testing.T) {
		r := newInitRun(t, bin)
		// A keyring the master key cannot open: `keyring set` fails.
		if err := os.WriteFile(r.path("keyring/wsbridge.keyring"), []byte("not a keyring\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		r.run(t, "admin-"+randomHex(t, 8))
		if r.exitStatus == 0 {
			t.Fatalf("exit 0 after a failed keyring set:\n%s%s", r.stdout, r.stderr)
		}
		if _, err := os.Stat(r.path("definitions/definitions.json")); !os.IsNotExist(err) {
			t.Fatalf("definitions written after a failed step: %v", err)
		}
	})

	r := newInitRun(t, bin)
	adminPass := "admin-" + randomHex(t, 12)
	r.run(t, adminPass)
	if r.exitStatus != 0 {
		t.Fatalf("init: exit %d\n%s%s", r.exitStatus, r.stdout, r.stderr)
	}
	key, err := keyring.LoadKeyFile(r.path("key/master.key"))
	if err != nil {
		t.Fatal(err)
	}
	kr, err := keyring.Open(r.path("keyring/wsbridge.keyring"), key)
	if err != nil {
		t.Fatal(err)
	}
	cred, err := kr.Get("rabbit")
	if err != nil || cred.Username != r.gw {
		t.Fatalf("keyring entry rabbit: %v %v", cred, err)
	}
	defs, err := os.ReadFile(r.path("definitions/definitions.json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{cred.Password.Reveal(), adminPass} {
		if strings.Contains(r.stdout+r.stderr+string(defs), secret) {
			t.Fatal("a password reached the script's output or the definitions in the clear")
		}
	}
	for _, f := range []string{"keyring/wsbridge.keyring", "key/master.key", "definitions/definitions.json"} {
		if st, err := os.Stat(r.path(f)); err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v, mode %v; want 0600", f, err, st.Mode().Perm())
		}
	}

	// A second `up` keeps what the first made.
	r.run(t, "")
	if again, _ := os.ReadFile(r.path("definitions/definitions.json")); r.exitStatus != 0 || string(again) != string(defs) {
		t.Fatalf("second run: exit %d, definitions changed %v\n%s", r.exitStatus, string(again) != string(defs), r.stderr)
	}

	// Load the users and permissions; the vhost is the shared broker's
	// own "/", left as it is.
	var doc map[string]any
	if err := json.Unmarshal(defs, &doc); err != nil {
		t.Fatalf("definitions are not JSON: %v\n%s", err, defs)
	}
	delete(doc, "vhosts")
	load, _ := json.Marshal(doc)
	t.Cleanup(func() {
		for _, u := range []string{r.gw, r.admin} {
			exec.Command("rabbitmqctl", "delete_user", u).Run()
		}
	})
	// From stdin: rabbitmqctl runs as the rabbitmq user, who cannot read
	// the test's directories.
	rabbitmqctl(t, string(load), "import_definitions", "--format", "json")

	admin, err := amqp.DialConfig("amqp://"+amqpAddr+"/", amqp.Config{SASL: []amqp.Authentication{&amqp.PlainAuth{Username: r.admin, Password: adminPass}}})
	if err != nil {
		t.Fatalf("administrator login with BROKER_ADMIN_PASSWORD: %v", err)
	}
	admin.Close()

	// testdata/compose.yaml with this machine's broker addresses and the
	// script's keyring.
	cfgText, err := os.ReadFile(composeConfig)
	if err != nil {
		t.Fatal(err)
	}
	cfg := strings.NewReplacer(
		"rabbitmq:61613", stompAddr,
		"rabbitmq:5672", amqpAddr,
		"/keyring/wsbridge.keyring", r.path("keyring/wsbridge.keyring"),
		"/keyring-key/master.key", r.path("key/master.key"),
	).Replace(string(cfgText))
	cfgPath := filepath.Join(r.dir, "compose.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("WSBRIDGE_KEYRING", "")
	t.Setenv("WSBRIDGE_KEYRING_KEY", "")
	t.Setenv("WSBRIDGE_KEYRING_KEY_FILE", "")
	g := serve(t, "-config", cfgPath)
	if code, body := get(t, "http://"+g.addr+"/readyz"); code != 200 {
		t.Fatalf("readyz: %d %q", code, body)
	}
	if code, body := get(t, "http://"+g.addr+"/"); code != 200 || !strings.Contains(body, "wsbridge demo") {
		t.Fatalf("demo page: %d", code)
	}

	topic := "compose.t" + randomHex(t, 6)
	lines := sseLines(t, "http://"+g.addr+"/sse/"+topic)
	conn, c := dialSTOMP(t, g.addr, "")
	conn.WriteString("CONNECT\naccept-version:1.2\nheart-beat:0,0\n\n\x00" +
		"SUBSCRIBE\nid:0\ndestination:/topic/" + topic + "\nreceipt:sub\n\n\x00")
	expectFrame(t, c, "CONNECTED")
	expectFrame(t, c, "RECEIPT")
	conn.WriteString("SEND\ndestination:/topic/" + topic + "\n\nfrom stomp\x00")
	post, err := http.Post("http://"+g.addr+"/publish/"+topic, "text/plain", strings.NewReader("from publish"))
	if err != nil {
		t.Fatal(err)
	}
	post.Body.Close()
	if post.StatusCode != http.StatusAccepted {
		t.Fatalf("publish under the gateway user's permissions: %d", post.StatusCode)
	}
	got := expectFrame(t, c, "MESSAGE") + expectFrame(t, c, "MESSAGE")
	for _, want := range []string{"from stomp", "from publish"} {
		if !strings.Contains(got, want) {
			t.Fatalf("STOMP subscriber missed %q: %q", want, got)
		}
	}
	want := map[string]bool{"data: from stomp": false, "data: from publish": false}
	timeout := time.After(10 * time.Second)
	for seen := 0; seen < len(want); {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatal("SSE stream ended")
			}
			if done, ok := want[l]; ok && !done {
				want[l] = true
				seen++
			}
		case <-timeout:
			t.Fatalf("SSE stream missed some of %v", want)
		}
	}

	// Least privilege: a queue the gateway has no business with.
	// Should RabbitMQ accept it after all, the queue goes when the test ends.
	q := brokertest.RabbitQueue(t, "compose-"+randomHex(t, 6))
	conn.WriteString("SUBSCRIBE\nid:1\ndestination:/queue/" + q + "\nreceipt:q\n\n\x00")
	if f := expectFrame(t, c, "ERROR"); !strings.Contains(f, "access_refused") && !strings.Contains(f, "ACCESS_REFUSED") {
		t.Fatalf("a /queue/ subscription was not refused by RabbitMQ: %q", f)
	}
}

// expectFrame waits for the next STOMP frame and checks its command.
func expectFrame(t *testing.T, c *wsClient, command string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		select {
		case m := <-c.msgs:
			f := string(m)
			if strings.Trim(f, "\r\n") == "" {
				continue // heart-beat
			}
			if !strings.HasPrefix(f, command+"\n") {
				t.Fatalf("got %q, want %s", f, command)
			}
			return f
		case <-ctx.Done():
			t.Fatalf("no %s frame", command)
		}
	}
}
