package bridge

import "testing"

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
	cs := NewConns(2)
	a, b, c := &fakeConn{}, &fakeConn{}, &fakeConn{}
	ra, ok1 := cs.Add(a)
	_, ok2 := cs.Add(b)
	_, ok3 := cs.Add(c)
	if !ok1 || !ok2 || ok3 || !cs.Full() {
		t.Fatalf("limit 2 admitted %v %v %v", ok1, ok2, ok3)
	}
	ra()
	ra() // release is idempotent
	if cs.Len() != 1 || cs.Full() {
		t.Fatalf("after release: %d live", cs.Len())
	}
	if _, ok := cs.Add(c); !ok {
		t.Fatal("a freed slot was not reusable")
	}
}

type fakeConn struct{ reason string }

func (f *fakeConn) GoAway(reason string) { f.reason = reason }
