package front

import (
	"errors"
	"testing"
)

func TestOrigins(t *testing.T) {
	o, err := NewOrigins([]string{"https://app.example.com", "http://localhost:*"})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		origin string
		want   bool
	}{
		{"", true}, // not a browser
		{"https://app.example.com", true},
		{"HTTPS://APP.EXAMPLE.COM", true},
		{"https://app.example.com:8443", false},
		{"http://app.example.com", false},
		{"https://evil.example.com", false},
		{"https://app.example.com.evil.net", false},
		{"http://localhost:3000", true},
		{"http://localhost", true},
		{"http://localhost:3000x", false},
		{"http://localhost.evil.net:80", false},
		{"null", false},
	}
	for _, tt := range tests {
		if got := o.Allowed(tt.origin); got != tt.want {
			t.Errorf("Allowed(%q) = %v, want %v", tt.origin, got, tt.want)
		}
	}
	if any, _ := NewOrigins([]string{"*"}); !any.Allowed("https://whatever.example") {
		t.Error("* must allow any origin")
	}
	for _, bad := range []string{"example.com", "https://a.example/path", "ftp://x:*", "https://*.example.com"} {
		if _, err := NewOrigins([]string{bad}); err == nil {
			t.Errorf("NewOrigins(%q) accepted", bad)
		}
	}
}

func TestConnsLimitAndRelease(t *testing.T) {
	cs := NewConns(3, 2)
	a, b, c, d := &fakeConn{}, &fakeConn{}, &fakeConn{}, &fakeConn{}
	ra, err1 := cs.Add(a, "10.0.0.1")
	_, err2 := cs.Add(b, "10.0.0.1")
	_, err3 := cs.Add(c, "10.0.0.1")
	if err1 != nil || err2 != nil || !errors.Is(err3, ErrIPFull) {
		t.Fatalf("per-address limit 2 admitted %v %v %v", err1, err2, err3)
	}
	if _, err := cs.Add(c, "10.0.0.2"); err != nil {
		t.Fatalf("another address was refused: %v", err)
	}
	if _, err := cs.Add(d, "10.0.0.3"); !errors.Is(err, ErrFull) || !cs.Full() {
		t.Fatalf("overall limit 3: %v", err)
	}
	ra()
	ra() // release is idempotent
	if cs.Len() != 2 || cs.Full() {
		t.Fatalf("after release: %d live", cs.Len())
	}
	if _, err := cs.Add(d, "10.0.0.1"); err != nil {
		t.Fatalf("a freed slot was not reusable: %v", err)
	}
}

type fakeConn struct{ reason string }

func (f *fakeConn) GoAway(reason string) { f.reason = reason }
