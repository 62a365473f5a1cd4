//go:build !linux

package bridge

import "net"

// unreadBytes is -1 where the kernel's unread bytes of a socket cannot be
// told here: a message timeout then never waits for the read loop.
func unreadBytes(net.Conn) int { return -1 }
