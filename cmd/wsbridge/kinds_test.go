package main

import "testing"

// TestKindsAreComplete: every registered kind can be built and checked,
// and every backend a route kind accepts is registered.
func TestKindsAreComplete(t *testing.T) {
	for _, k := range backendKinds {
		if k.name == "" || k.login == nil || k.newBroker == nil {
			t.Errorf("backend kind %+v: a name, a login check and a broker builder are needed", k)
		}
	}
	for _, k := range routeKinds {
		if k.build == nil || len(k.accepts) == 0 {
			t.Errorf("route kind %q: a builder and at least one backend kind are needed", k.key)
		}
		for _, b := range k.accepts {
			if backendKindOf(b) == nil {
				t.Errorf("route kind %q accepts %q, which is not a backend kind", k.key, b)
			}
		}
	}
}
