package virtio

import (
	"bytes"
	"encoding/binary"
	"net"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// enterNetNS moves the calling goroutine's thread into a new network
// namespace (the thread is discarded when the test's goroutine ends, since
// it is never unlocked). It skips when that is not possible.
func enterNetNS(t testing.TB) {
	t.Helper()
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skip("/dev/net/tun absent: ", err)
	}
	runtime.LockOSThread()
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		t.Skip("cannot create a network namespace (needs CAP_SYS_ADMIN): ", err)
	}
}

// configureTap gives the host side of the tap an address and brings it up.
func configureTap(t testing.TB, name string, ip net.IP) {
	t.Helper()
	s, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(s)
	ifr, _ := unix.NewIfreq(name)
	if err := ifr.SetInet4Addr(ip.To4()); err != nil {
		t.Fatal(err)
	}
	if err := unix.IoctlIfreq(s, unix.SIOCSIFADDR, ifr); err != nil {
		t.Fatal("SIOCSIFADDR: ", err)
	}
	ifr, _ = unix.NewIfreq(name)
	ifr.SetInet4Addr(net.IPv4(255, 255, 255, 0).To4())
	if err := unix.IoctlIfreq(s, unix.SIOCSIFNETMASK, ifr); err != nil {
		t.Fatal("SIOCSIFNETMASK: ", err)
	}
	ifr, _ = unix.NewIfreq(name)
	ifr.SetUint16(unix.IFF_UP)
	if err := unix.IoctlIfreq(s, unix.SIOCSIFFLAGS, ifr); err != nil {
		t.Fatal("SIOCSIFFLAGS: ", err)
	}
}

func csum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}

var (
	guestMAC = net.HardwareAddr{0x52, 0x54, 0x00, 0x12, 0x34, 0x56}
	guestIP  = net.IPv4(10, 0, 2, 2).To4()
	hostIP   = net.IPv4(10, 0, 2, 1).To4()
)

func arpRequest() []byte {
	f := make([]byte, 42)
	copy(f[0:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	copy(f[6:12], guestMAC)
	binary.BigEndian.PutUint16(f[12:], 0x0806)
	copy(f[14:], []byte{0, 1, 8, 0, 6, 4, 0, 1})
	copy(f[22:28], guestMAC)
	copy(f[28:32], guestIP)
	copy(f[38:42], hostIP)
	return f
}

func icmpEcho(dst net.HardwareAddr, id uint16) []byte {
	f := make([]byte, 14+20+16)
	copy(f[0:6], dst)
	copy(f[6:12], guestMAC)
	binary.BigEndian.PutUint16(f[12:], 0x0800)
	ip := f[14:34]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], 36)
	ip[8] = 64
	ip[9] = 1
	copy(ip[12:16], guestIP)
	copy(ip[16:20], hostIP)
	binary.BigEndian.PutUint16(ip[10:], csum(ip))
	icmp := f[34:]
	icmp[0] = 8
	binary.BigEndian.PutUint16(icmp[4:], id)
	binary.BigEndian.PutUint16(icmp[6:], 1)
	copy(icmp[8:], "godvm!!!")
	binary.BigEndian.PutUint16(icmp[2:], csum(icmp))
	return f
}

type netRig struct {
	m      *machine
	d      *driver
	rx, tx *drvQueue
	rxBufs map[uint32]uint64
	t      testing.TB
}

func newNetRig(t testing.TB) *netRig {
	enterNetNS(t)
	m := newMachine(t)
	be, err := NewNet(NetOptions{Tap: "gdvtest0", MAC: guestMAC})
	if err != nil {
		t.Skip("tap unavailable here: ", err)
	}
	dev, err := addDevice(m.p, m.root, "net", be, be.tap)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dev.Close(); be.Close() })
	configureTap(t, "gdvtest0", hostIP)
	d := m.probe(1)
	if st := d.init(FVersion1 | NetFMAC | NetFStatus); st&StatusDriverOK == 0 {
		t.Fatalf("status %#x", st)
	}
	r := &netRig{m: m, d: d, rx: d.q[netRx], tx: d.q[netTx], rxBufs: map[uint32]uint64{}, t: t}
	for i := 0; i < 8; i++ {
		r.post()
	}
	d.kick(r.rx)
	return r
}

func (r *netRig) post() {
	a := r.d.alloc(2048)
	r.rxBufs[uint32(r.d.submit(r.rx, []seg{{a, 1526, true}}))] = a
}

func (r *netRig) send(frame []byte) {
	d, m := r.d, r.m
	a := d.alloc(uint64(vnetHdrLen + len(frame)))
	m.mem.Fill(a, vnetHdrLen, 0)
	m.mem.WriteAt(frame, a+vnetHdrLen)
	// Header and frame in separate descriptors, as Linux may do.
	d.submit(r.tx, []seg{{a, vnetHdrLen, false}, {a + vnetHdrLen, uint32(len(frame)), false}})
	d.kick(r.tx)
	d.waitUsed(r.tx, 1)
}

// receive returns the next frame matching want, re-posting buffers.
func (r *netRig) receive(want func([]byte) bool) []byte {
	d, m := r.d, r.m
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		for _, u := range d.waitUsed(r.rx, 1) {
			a := r.rxBufs[u[0]]
			b := make([]byte, u[1])
			m.mem.ReadAt(b, a)
			r.post()
			d.kick(r.rx)
			if nb := binary.LittleEndian.Uint16(b[10:]); nb != 1 {
				r.t.Fatalf("num_buffers %d", nb)
			}
			if f := b[vnetHdrLen:]; want(f) {
				return f
			}
		}
	}
	r.t.Fatal("frame not received")
	return nil
}

func isARPReply(f []byte) bool {
	return len(f) >= 42 && binary.BigEndian.Uint16(f[12:]) == 0x0806 && binary.BigEndian.Uint16(f[20:]) == 2
}

func TestNetTap(t *testing.T) {
	r := newNetRig(t)
	m, d := r.m, r.d
	mac := make([]byte, 6)
	for i := range mac {
		mac[i] = byte(m.rd(d.devcfg+uint64(i), 1))
	}
	if !bytes.Equal(mac, guestMAC) || m.rd(d.devcfg+6, 2) != 1 {
		t.Fatalf("config mac %x status %d", mac, m.rd(d.devcfg+6, 2))
	}
	r.send(arpRequest())
	reply := r.receive(isARPReply)
	hostMAC := net.HardwareAddr(reply[22:28])
	if !bytes.Equal(reply[0:6], guestMAC) || !bytes.Equal(reply[28:32], hostIP) {
		t.Fatalf("ARP reply %x", reply)
	}
	r.send(icmpEcho(hostMAC, 0x4242))
	echo := r.receive(func(f []byte) bool {
		return len(f) >= 42 && binary.BigEndian.Uint16(f[12:]) == 0x0800 && f[23] == 1 && f[34] == 0
	})
	if binary.BigEndian.Uint16(echo[38:]) != 0x4242 || !bytes.Contains(echo, []byte("godvm!!!")) {
		t.Fatalf("echo reply %x", echo)
	}
	if d.status()&StatusNeedsReset != 0 {
		t.Fatal("needs reset")
	}
}

// BenchmarkNetARPRoundTrip: guest ARP request -> tx queue -> tap -> host
// kernel -> tap -> rx queue -> MSI-X, one at a time (ns/op is the round
// trip through both queues and the host stack).
func BenchmarkNetARPRoundTrip(b *testing.B) {
	r := newNetRig(b)
	req := arpRequest()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		r.send(req)
		r.receive(isARPReply)
	}
}

func TestNetBadInput(t *testing.T) {
	for _, c := range []struct {
		in, err string
	}{
		{"", "not key=value"},
		{"tap=", "tap name"},
		{"tap=a234567890123456", "tap name"},
		{"tap=t0,mac=zz", "bad mac"},
		{"tap=t0,mac=01:00:00:00:00:01", "multicast"},
		{"tap=t0,queues=4", "unknown option"},
		{"mac=52:54:00:00:00:01", "missing tap"},
	} {
		_, err := ParseNetFlag(c.in)
		if err == nil || !strings.Contains(err.Error(), c.err) {
			t.Errorf("ParseNetFlag(%q) = %v, want %q", c.in, err, c.err)
		}
	}
	o, err := ParseNetFlag("tap=t0,mac=52:54:00:00:00:01")
	if err != nil || o.Tap != "t0" || o.MAC.String() != "52:54:00:00:00:01" {
		t.Fatalf("%+v %v", o, err)
	}
	if m := RandomMAC(); m[0]&3 != 2 {
		t.Fatalf("random MAC %s not locally administered unicast", m)
	}
	// A tap that cannot be created: a clear one-line error.
	if _, err := OpenTap("bad/name"); err == nil || strings.Contains(err.Error(), "\n") {
		t.Fatalf("bad tap name: %v", err)
	}
}
