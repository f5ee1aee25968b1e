package e2e

// virtio end to end: the guest kernel's own virtio drivers on godvm's
// virtio-pci devices, driven by the agent's virtio scenarios
// (images/agent/scenario_virtio.c).

import (
	"bytes"
	"context"
	"encoding/binary"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"godvm/devices/virtio"
	"godvm/internal/proc"
	"godvm/internal/testkernel"
)

const (
	blkPatternSector = 2048
	blkMagic         = "GODVM-BLK-PATTRN"
)

// blkPattern is what the virtio-blk scenario writes (see scenario_virtio.c).
func blkPattern() []byte {
	p := make([]byte, 4096)
	for i := range p {
		p[i] = byte(i*7 + 3)
	}
	copy(p, blkMagic)
	return p
}

func newDiskImage(t *testing.T, name string, size int64) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	f.Close()
	return p
}

// TestVirtio boots once with three disks (read-write, read-only, a bench
// disk), virtio-rng and a virtio console, and runs the agent's virtio
// scenarios on them: enumeration with MSI-X, a pattern written with FUA and
// a flush that must be in the image after power-off, a read-only disk that
// refuses writes, the kernel's hwrng on virtio-rng, and sequential
// throughput (reported, with godvm's exit counts).
func TestVirtio(t *testing.T) {
	img := newDiskImage(t, "rw.img", 8<<20)
	ro := newDiskImage(t, "ro.img", 8<<20)
	bench := newDiskImage(t, "bench.img", 80<<20)
	out := bootAgent(t, agentRun{
		Scenarios: []string{"virtio-pci", "virtio-blk", "virtio-blk-ro", "virtio-rng", "virtio-blk-bench"},
		Args: []string{"--boot-trace",
			"--disk", img + ",id=godvm-rw", "--disk", ro + ",readonly,id=godvm-ro", "--disk", bench + ",id=godvm-bench",
			"--virtio-rng", "--virtio-console", filepath.Join(t.TempDir(), "hvc0.log")},
	})
	out.wantStatus(t, 0)

	t.Run("enumeration", func(t *testing.T) {
		out.KTAP.wantOK(t, "virtio-pci")
		if v, _ := out.KTAP.Diag("virtio_pci_devices"); v != "5" {
			t.Errorf("virtio_pci_devices=%q, want 5; diagnostics %q", v, out.KTAP.Diagnostics)
		}
		// One vector per queue plus the config vector, all in use.
		want := map[string]struct {
			n   int
			vec string
		}{"1af4:1042": {3, "vectors=2"}, "1af4:1044": {1, "vectors=2"}, "1af4:1043": {1, "vectors=3"}}
		for id, w := range want {
			found := 0
			for _, d := range out.KTAP.Diagnostics {
				if strings.Contains(d, "id="+id) {
					found++
					if !strings.Contains(d, "driver=virtio-pci msix=1") || !strings.Contains(d, w.vec) {
						t.Errorf("%s: %q, want MSI-X on with %s", id, d, w.vec)
					}
				}
			}
			if found != w.n {
				t.Errorf("%d %s devices enumerated, want %d; diagnostics %q", found, id, w.n, out.KTAP.Diagnostics)
			}
		}
	})
	t.Run("blk pattern reaches the image", func(t *testing.T) {
		out.KTAP.wantOK(t, "virtio-blk")
		// After power-off the host finds the pattern in the image: nothing
		// was lost between the guest's FUA/flush and godvm's exit.
		b, err := os.ReadFile(img)
		if err != nil {
			t.Fatal(err)
		}
		got := b[blkPatternSector*512 : blkPatternSector*512+4096]
		if !bytes.Equal(got, blkPattern()) {
			t.Fatalf("image at sector %d: % x..., want the pattern", blkPatternSector, got[:32])
		}
	})
	t.Run("read-only disk refuses writes", func(t *testing.T) {
		out.KTAP.wantOK(t, "virtio-blk-ro")
		b, err := os.ReadFile(ro)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(b, make([]byte, len(b))) {
			t.Fatal("the read-only image was modified")
		}
	})
	t.Run("rng", func(t *testing.T) {
		out.KTAP.wantOK(t, "virtio-rng")
		if v, _ := out.KTAP.Diag("rng_current"); !strings.HasPrefix(v, "virtio_rng") {
			t.Errorf("rng_current=%q", v)
		}
	})
	t.Run("blk throughput", func(t *testing.T) {
		out.KTAP.wantOK(t, "virtio-blk-bench")
		v, ok := out.KTAP.Diag("blk_seq_write_MBps")
		if !ok {
			t.Fatalf("no throughput report; diagnostics %q", out.KTAP.Diagnostics)
		}
		t.Logf("guest: blk_seq_write_MBps=%s; godvm: %s", v, exitsLine(out.Stderr))
	})
}

// The guest kernel mounts an ext4 image as its root file system; the mount
// count in the superblock (offset 1024 + 0x34) goes up. There is no init on
// the image (guest user space cannot run here), so the kernel then panics
// with "No working init found": exit status 2 is expected.
func TestVirtioBlkExt4Root(t *testing.T) {
	kernel := testKernel(t)
	mkfs, err := exec.LookPath("mkfs.ext4")
	if err != nil {
		t.Skip("mkfs.ext4 not installed: ", err)
	}
	img := newDiskImage(t, "root.img", 32<<20)
	if out, err := exec.Command(mkfs, "-q", "-F", img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
	before := mountCount(t, img)
	out := runGodvm(t, 300*time.Second, "run", "--kernel", kernel, "--timeout", "240s",
		"--cmdline", "root=/dev/vda rw rootfstype=ext4", "--disk", img)
	if !strings.Contains(out.Stdout, "Mounted root (ext4 filesystem)") {
		t.Fatalf("root not mounted (status %d):\n%s", out.Status, proc.TailLines(out.Stdout, 30))
	}
	out.wantStatus(t, 2)
	if after := mountCount(t, img); after != before+1 {
		t.Fatalf("ext4 mount count %d -> %d, want +1", before, after)
	}
}

func mountCount(t *testing.T, img string) uint16 {
	t.Helper()
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var b [2]byte
	if _, err := f.ReadAt(b[:], 1024+0x34); err != nil {
		t.Fatal(err)
	}
	return binary.LittleEndian.Uint16(b[:])
}

// Bad input needs no KVM: the options are checked before the machine is
// built.
func TestVirtioBadInput(t *testing.T) {
	dir := t.TempDir()
	kernel := filepath.Join(dir, "vmlinux")
	os.WriteFile(kernel, testkernel.TinyELF(), 0o644)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--disk", filepath.Join(dir, "missing.img")}, "missing.img"},
		{[]string{"--disk", dir + "/x.img,rw"}, "unknown option"},
		{[]string{"--net", "tap=t0,queues=2"}, "unknown option"},
		{[]string{"--net", "mac=52:54:00:00:00:01"}, "missing tap"},
		{[]string{"--net", "tap=t0,mac=nonsense"}, "bad mac"},
	} {
		args := append([]string{"run", "--kernel", kernel, "--timeout", "10s"}, c.args...)
		out := runGodvm(t, 60*time.Second, args...)
		if out.Status != 1 {
			t.Errorf("%v: status %d, want 1 (stderr %q)", c.args, out.Status, out.Stderr)
			continue
		}
		msg := strings.TrimSpace(out.Stderr)
		if !strings.Contains(msg, c.want) || strings.Count(msg, "\n") > 0 || strings.Contains(msg, "goroutine") {
			t.Errorf("%v: stderr %q, want one line mentioning %q", c.args, msg, c.want)
		}
	}
}

// The guest configures eth0 by IP autoconfiguration (ip= on its command
// line) and the host pings it through the tap; everything happens inside a
// network namespace this test creates, so no traffic leaves it.
func TestVirtioNetPing(t *testing.T) {
	kernel := testKernel(t)
	const (
		tap     = "godvmtap0"
		hostIP  = "10.0.2.1"
		guestIP = "10.0.2.15"
		mac     = "52:54:00:12:34:56"
	)
	// The goroutine's thread moves into a fresh network namespace; godvm,
	// started from this thread, inherits it. The thread is never unlocked,
	// so it (and the namespace with its tap) goes away with the test.
	runtime.LockOSThread()
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		t.Skip("cannot create a network namespace: ", err)
	}
	tp, err := virtio.OpenTap(tap)
	if err != nil {
		t.Skip("cannot create a tap: ", err)
	}
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(tp.Fd()), unix.TUNSETPERSIST, 1); e != 0 {
		t.Fatal("TUNSETPERSIST: ", e)
	}
	tp.Close()
	setAddrUp(t, tap, net.ParseIP(hostIP))

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Second)
	defer cancel()
	cmdline := "godvm_agent.run=virtio-net ip=" + guestIP + "::" + hostIP + ":255.255.255.0::eth0:off"
	cmd := exec.CommandContext(ctx, godvmBinary(t), "run", "--kernel", kernel, "--timeout", "240s",
		"--cmdline", cmdline, "--net", "tap="+tap+",mac="+mac)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()

	replies := 0
	deadline := time.Now().Add(240 * time.Second)
	for replies < 3 && time.Now().Before(deadline) {
		select {
		case err := <-done:
			t.Fatalf("godvm exited before answering pings (%v):\n%s\nstderr: %s", err, proc.TailLines(stdout.String(), 30), stderr.String())
		default:
		}
		if pingOnce(t, net.ParseIP(guestIP), uint16(replies+1)) {
			replies++
		} else {
			time.Sleep(500 * time.Millisecond)
		}
	}
	if replies < 3 {
		cmd.Process.Kill()
		t.Fatalf("guest answered %d of 3 pings:\n%s", replies, proc.TailLines(stdout.String(), 30))
	}
	status, err := proc.ExitStatus(<-done)
	if err != nil {
		t.Fatal(err)
	}
	k := ParseKTAP(stdout.String())
	if status != 0 {
		t.Fatalf("godvm exit status %d:\n%s\nstderr: %s", status, proc.TailLines(stdout.String(), 30), stderr.String())
	}
	k.wantOK(t, "virtio-net")
	if v, _ := k.Diag("net=eth0 mac"); v != mac {
		t.Errorf("guest MAC %q, want %s", v, mac)
	}
}

// setAddrUp gives the host end of the tap its address and brings it up.
func setAddrUp(t *testing.T, name string, ip net.IP) {
	t.Helper()
	s, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(s)
	for _, step := range []struct {
		req uint
		set func(*unix.Ifreq) error
	}{
		{unix.SIOCSIFADDR, func(r *unix.Ifreq) error { return r.SetInet4Addr(ip.To4()) }},
		{unix.SIOCSIFNETMASK, func(r *unix.Ifreq) error { return r.SetInet4Addr(net.IPv4(255, 255, 255, 0).To4()) }},
		{unix.SIOCSIFFLAGS, func(r *unix.Ifreq) error { r.SetUint16(unix.IFF_UP); return nil }},
	} {
		r, err := unix.NewIfreq(name)
		if err != nil {
			t.Fatal(err)
		}
		if err := step.set(r); err != nil {
			t.Fatal(err)
		}
		if err := unix.IoctlIfreq(s, step.req, r); err != nil {
			t.Fatalf("ioctl %#x on %s: %v", step.req, name, err)
		}
	}
}

// pingOnce sends one ICMP echo request from this thread's namespace and
// waits up to a second for the reply.
func pingOnce(t *testing.T, dst net.IP, seq uint16) bool {
	t.Helper()
	s, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMP)
	if err != nil {
		t.Fatal("raw ICMP socket: ", err)
	}
	defer unix.Close(s)
	tv := unix.Timeval{Sec: 1}
	unix.SetsockoptTimeval(s, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	msg := make([]byte, 16)
	msg[0] = 8 // echo request
	binary.BigEndian.PutUint16(msg[4:], 0x6764)
	binary.BigEndian.PutUint16(msg[6:], seq)
	copy(msg[8:], "godvm-e2")
	binary.BigEndian.PutUint16(msg[2:], icmpChecksum(msg))
	sa := &unix.SockaddrInet4{}
	copy(sa.Addr[:], dst.To4())
	if err := unix.Sendto(s, msg, 0, sa); err != nil {
		return false
	}
	buf := make([]byte, 1500)
	end := time.Now().Add(time.Second)
	for time.Now().Before(end) {
		n, _, err := unix.Recvfrom(s, buf, 0)
		if err != nil {
			return false
		}
		if n < 20 {
			continue
		}
		ihl := int(buf[0]&0xf) * 4
		icmp := buf[ihl:n]
		if len(icmp) >= 8 && icmp[0] == 0 && binary.BigEndian.Uint16(icmp[4:]) == 0x6764 && binary.BigEndian.Uint16(icmp[6:]) == seq {
			return true
		}
	}
	return false
}

func icmpChecksum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}
