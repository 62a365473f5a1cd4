//go:build unix

package bridge

import "syscall"

// rawReads says whether rawRead can read a socket by its descriptor.
const rawReads = true

// rawRead reads from a non-blocking socket; an interrupted read is retried,
// so EAGAIN is the only way to say there is nothing yet.
func rawRead(fd uintptr, b []byte) (int, error) {
	for {
		n, err := syscall.Read(int(fd), b)
		if err != syscall.EINTR {
			return n, err
		}
	}
}
