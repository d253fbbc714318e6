package agent

import (
	"errors"
	"fmt"
	"net"
	"os"

	"golang.org/x/sys/unix"
)

// peerCredentials reads SO_PEERCRED from a Unix socket connection.
func peerCredentials(nc net.Conn) (peerCred, error) {
	uc, ok := nc.(*net.UnixConn)
	if !ok {
		return peerCred{}, fmt.Errorf("peer credentials: %T is not a Unix socket", nc)
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return peerCred{}, fmt.Errorf("peer credentials: %w", err)
	}
	var (
		cred    *unix.Ucred
		credErr error
	)
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return peerCred{}, fmt.Errorf("peer credentials: %w", err)
	}
	if credErr != nil {
		return peerCred{}, fmt.Errorf("peer credentials: SO_PEERCRED: %w", credErr)
	}
	if cred == nil {
		return peerCred{}, errors.New("peer credentials: none reported")
	}
	p := peerCred{pid: cred.Pid, uid: cred.Uid, gid: cred.Gid}
	if p.pid > 0 {
		// Unreadable for processes of other users or non-dumpable ones;
		// the pid is still logged.
		p.exe, _ = os.Readlink(fmt.Sprintf("/proc/%d/exe", p.pid))
	}
	return p, nil
}
