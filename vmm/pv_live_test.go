package vmm

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"godvm/devices/bus"
)

// pvPortal is a Wide64 device for the live test: it records what arrives
// (from the vCPU thread) and refuses ENQCMDS.
type pvPortal struct {
	mu     sync.Mutex
	writes []pvWrite
}

type pvWrite struct {
	off  uint64
	kind bus.WideKind
	data [64]byte
}

func (p *pvPortal) Read(off uint64, data []byte)  {}
func (p *pvPortal) Write(off uint64, data []byte) {}
func (p *pvPortal) Write64B(off uint64, data *[64]byte, kind bus.WideKind) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.writes = append(p.writes, pvWrite{off, kind, *data})
	return kind != bus.ENQCMDS
}

// The paravirtual store port through the real exit path: a guest runs the
// protocol's "inl $0xf6, %eax" three times (MOVDIR64B to a portal, to RAM,
// ENQCMDS that the device refuses) and reports the three EAX values on the
// debug-exit port. The answers must reach EAX through the IN's data alone.
func TestLivePV64B(t *testing.T) {
	requireKVM(t)
	const (
		src    = 0x0200_0000
		ramDst = 0x0210_0000
		portal = 0xd000_0000
	)
	code := []byte{
		0xbf, 0x00, 0x00, 0x00, 0x02, // mov edi, src
		0x31, 0xc0, // xor eax, eax
		0x88, 0x04, 0x07, // 1: mov [rdi+rax], al
		0xff, 0xc0, // inc eax
		0x83, 0xf8, 0x40, // cmp eax, 64
		0x75, 0xf6, // jne 1b
		0xbe, 0x00, 0x00, 0x00, 0x02, // mov esi, src
		0xbf, 0x40, 0x00, 0x00, 0xd0, // mov edi, portal+0x40
		0xb8, 0x01, 0x00, 0x00, 0x00, // mov eax, 1 (MOVDIR64B)
		0xe5, 0xf6, // in eax, 0xf6
		0x89, 0xc3, // mov ebx, eax
		0xbf, 0x00, 0x00, 0x10, 0x02, // mov edi, ramDst
		0xb8, 0x01, 0x00, 0x00, 0x00, // mov eax, 1
		0xe5, 0xf6, // in eax, 0xf6
		0xc1, 0xe0, 0x08, // shl eax, 8
		0x09, 0xc3, // or ebx, eax
		0xbf, 0x80, 0x00, 0x00, 0xd0, // mov edi, portal+0x80
		0xb8, 0x02, 0x00, 0x00, 0x00, // mov eax, 2 (ENQCMDS)
		0x66, 0xba, 0xf6, 0x00, // mov dx, 0xf6
		0xed,             // in eax, dx
		0xc1, 0xe0, 0x10, // shl eax, 16
		0x09, 0xc3, // or ebx, eax
		0x81, 0xcb, 0x00, 0x00, 0x00, 0x01, // or ebx, 1<<24 (a non-zero marker)
		0x89, 0xd8, // mov eax, ebx
		0x66, 0xba, 0xf4, 0x00, // mov dx, 0xf4
		0xef, // out dx, eax
	}
	code = append(code, hltLoop...)
	k := filepath.Join(t.TempDir(), "vmlinux")
	if err := os.WriteFile(k, codeELF(code), 0o644); err != nil {
		t.Fatal(err)
	}
	dev := &pvPortal{}
	var logBuf bytes.Buffer
	m, err := New(Config{Kernel: k, Memory: 64 << 20, Timeout: 60 * time.Second, Console: io.Discard, BootTrace: true,
		DSAPath: "pv (test)", Log: slog.New(slog.NewTextHandler(&logBuf, nil)),
		Devices: []DeviceFunc{func(m *Machine) error { return m.Platform().MMIO.Register(portal, 0x1000, "pv portal", dev) }}})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	res, err := m.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// EAX: stored (0), not a portal (4), retry (1).
	if res.Reason != ReasonDebugExit || res.Code != 0x0101_0400 {
		t.Fatalf("%v code %#x, want debug-exit 0x01010400 (statuses 0, 4, 1): %s", res.Reason, res.Code, res.Summary())
	}
	dev.mu.Lock()
	defer dev.mu.Unlock()
	if len(dev.writes) != 2 {
		t.Fatalf("%d portal writes, want 2", len(dev.writes))
	}
	var want [64]byte
	for i := range want {
		want[i] = byte(i)
	}
	if w := dev.writes[0]; w.off != 0x40 || w.kind != bus.MOVDIR64B || w.data != want {
		t.Errorf("MOVDIR64B: off %#x kind %v data % x", w.off, w.kind, w.data)
	}
	binary.LittleEndian.PutUint32(want[:], 0x0302_0100&0x800f_ffff)
	if w := dev.writes[1]; w.off != 0x80 || w.kind != bus.ENQCMDS || w.data != want {
		t.Errorf("ENQCMDS: off %#x kind %v data % x", w.off, w.kind, w.data)
	}
	ram := make([]byte, 64)
	if err := m.Platform().Mem.ReadAt(ram, ramDst); err != nil || !bytes.Equal(ram, make([]byte, 64)) {
		t.Errorf("the refused store reached RAM: % x (%v)", ram, err)
	}
	tr := res.Trace
	if tr == nil || !strings.Contains(tr.Emulated, "pv-movdir64b=1 pv-enqcmds=1 pv-retry=1 pv-refused=1") ||
		strings.Contains(tr.Emulated, " movdir64b=") || tr.DSAPath != "pv (test)" {
		t.Errorf("trace %+v", tr)
	}
	if !strings.Contains(logBuf.String(), "paravirtual 64-byte store refused") || !strings.Contains(logBuf.String(), "dst=0x2100000") {
		t.Errorf("refusal not logged: %s", logBuf.String())
	}
}
