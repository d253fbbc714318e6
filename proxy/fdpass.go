package proxy

import (
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// PassToSSH hands f to ssh through stdout, OpenSSH's ProxyUseFdpass
// protocol: one byte with the descriptor as SCM_RIGHTS on the socket ssh
// gave the proxy as stdout. ssh then talks to the destination itself and
// waits for the proxy to exit.
func PassToSSH(stdout, f *os.File) error {
	var st unix.Stat_t
	if err := unix.Fstat(int(stdout.Fd()), &st); err != nil {
		return fmt.Errorf("pass the connection to ssh: %w", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return errors.New("--fdpass needs ssh's ProxyUseFdpass yes: only then is the proxy's output a socket that can carry the connection")
	}
	rights := unix.UnixRights(int(f.Fd()))
	for tries := 0; ; tries++ {
		err := unix.Sendmsg(int(stdout.Fd()), []byte{0}, rights, nil, 0)
		if err == nil {
			return nil
		}
		if (errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR)) && tries < 1000 {
			time.Sleep(5 * time.Millisecond)
			continue
		}
		return fmt.Errorf("pass the connection to ssh: %w", err)
	}
}
