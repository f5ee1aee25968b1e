package vfiouser

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"sync"
	"syscall"
	"time"
)

// ListenSocket listens on the UNIX socket path for a vfio-user server.
//
// A socket file already at path is taken over only when it is stale: nobody
// accepts connections on it (ECONNREFUSED, the server that made it is gone).
// If a server answers there, ListenSocket fails rather than unlinking the
// live server's socket from under it. Anything else at path is an error.
//
// The returned remove function closes the listener and unlinks the socket
// file, but only while the file is still the one this call created: a
// server that exits must not delete the socket of another server that has
// since been started on the same path. (net's own unlink-on-close is turned
// off because it unlinks by name.) remove may be called more than once.
func ListenSocket(path string) (l *net.UnixListener, remove func() error, err error) {
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&fs.ModeSocket == 0 {
			return nil, nil, fmt.Errorf("%s exists and is not a socket", path)
		}
		c, err := net.DialTimeout("unix", path, time.Second)
		switch {
		case err == nil:
			c.Close()
			return nil, nil, fmt.Errorf("%s is in use by a running server (stop it, or pick another --socket)", path)
		case errors.Is(err, syscall.ECONNREFUSED):
			if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return nil, nil, fmt.Errorf("removing the stale socket %s: %w", path, err)
			}
		default:
			return nil, nil, fmt.Errorf("%s exists and cannot be checked: %w", path, err)
		}
	}
	l, err = net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, nil, err
	}
	l.SetUnlinkOnClose(false)
	ours, err := os.Lstat(path)
	if err != nil {
		l.Close()
		return nil, nil, err
	}
	var once sync.Once
	remove = func() error {
		var err error
		once.Do(func() {
			l.Close()
			if fi, e := os.Lstat(path); e == nil && os.SameFile(fi, ours) {
				err = os.Remove(path)
			}
		})
		return err
	}
	return l, remove, nil
}
