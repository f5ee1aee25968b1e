package virtio

import (
	"errors"
	"log/slog"

	"golang.org/x/sys/unix"

	"godvm/devices/platform"
	"godvm/internal/sandbox"
)

// worker is the goroutine serving one activated device.
type worker struct {
	d      *Device
	env    *Env
	stopEv *platform.EventFD
	done   chan struct{}
	broken bool
}

func newWorker(d *Device, env *Env) (*worker, error) {
	ev, err := platform.NewEventFD()
	if err != nil {
		return nil, err
	}
	return &worker{d: d, env: env, stopEv: ev, done: make(chan struct{})}, nil
}

func (w *worker) start() { go w.run() }

func (w *worker) stop() {
	w.stopEv.Signal()
	<-w.done
	w.close()
}

func (w *worker) close() { w.stopEv.Close() }

func (w *worker) run() {
	defer close(w.done)
	d := w.d
	// Under godvm's seccomp filters the worker's thread takes the device
	// worker filter and stays locked (the thread ends with this goroutine).
	if err := sandbox.LockThread(sandbox.KindWorker); err != nil {
		w.broken = true
		d.fail(err)
		return
	}
	poller, _ := d.be.(Poller)
	fds := make([]unix.PollFd, 0, 1+len(d.queues)+2)
	// Serve anything queued before DRIVER_OK.
	for i := range d.queues {
		w.kick(i)
	}
	for {
		fds = fds[:0]
		fds = append(fds, unix.PollFd{Fd: int32(w.stopEv.Fd()), Events: unix.POLLIN})
		for i := range d.queues {
			fds = append(fds, unix.PollFd{Fd: int32(d.queues[i].kick.Fd()), Events: unix.POLLIN})
		}
		nq := len(fds)
		if poller != nil && !w.broken {
			for _, fd := range poller.PollFDs() {
				fds = append(fds, unix.PollFd{Fd: fd, Events: unix.POLLIN})
			}
		}
		_, err := unix.Poll(fds, -1)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			slog.Error("virtio: poll", "dev", d.Name(), "err", err)
			return
		}
		if fds[0].Revents != 0 {
			return
		}
		for i := 1; i < nq; i++ {
			if fds[i].Revents != 0 {
				d.queues[i-1].kick.Read()
				w.kick(i - 1)
			}
		}
		for _, f := range fds[nq:] {
			if f.Revents != 0 && !w.broken {
				w.check(poller.Ready(f.Fd))
			}
		}
	}
}

func (w *worker) kick(q int) {
	if w.broken || w.env.Queues[q] == nil {
		return
	}
	w.check(w.d.be.Kick(q))
}

func (w *worker) check(err error) {
	if err == nil {
		return
	}
	if IsChainError(err) {
		w.broken = true
		w.d.fail(err)
		return
	}
	slog.Warn("virtio: device error", "dev", w.d.Name(), "err", err)
}
