//go:build !unix

package bridge

// rawReads is false where a socket cannot be read by its descriptor here:
// an Upstream then holds its buffer while it waits.
const rawReads = false

func rawRead(uintptr, []byte) (int, error) { panic("bridge: rawRead without raw reads") }
