package probe

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"godvm/devices/bus"
	"godvm/guestmem"
	"godvm/kvm"
	"godvm/vmm/emulate"
)

// TestLiveEmulateWide runs MOVDIR64B and ENQCMDS in the probe's tiny CPL0
// guest on the real /dev/kvm and lets godvm's emulator (vmm/emulate) complete
// the KVM_EXIT_INTERNAL_ERROR (emulation) exits they cause, as vmm/exits.go
// does for a real guest. Two test devices on an MMIO bus stand for a DSA
// portal: one accepts every 64-byte write, one answers "retry". The test
// checks the 64 bytes and the guest-physical address of every write that
// reached a portal, RIP before and after each emulated instruction, the
// flags the guest sees afterwards, and emulate.Stats.
//
// It lives here because the probe's guest builder does, and because it
// needs what the probe finds: it runs only where MOVDIR64B is an emulation
// failure (kvm_pvm, or Intel hosts where MOVDIR64B meets an MMIO page);
// elsewhere the instruction never reaches godvm's emulator.
func TestLiveEmulateWide(t *testing.T) {
	p := newLiveProber(t)
	verdict := func(name string) InsnResult {
		for _, it := range insnTests {
			if it.name == name {
				return p.insn(it)
			}
		}
		t.Fatalf("no probe test for %s", name)
		return InsnResult{}
	}
	if r := verdict(MOVDIR64B); r.Outcome != EmulationFailure {
		t.Skipf("the probe's MOVDIR64B at CPL0 ended in %s, not an emulation failure: "+
			"on this host it never reaches godvm's emulator", outcome(r))
	}
	enq := verdict(ENQCMDS)
	start := time.Now()
	t.Run("movdir64b", func(t *testing.T) { runWideGuest(t, p, movdir64bGuest()) })
	t.Run("enqcmds", func(t *testing.T) {
		if enq.Outcome != EmulationFailure {
			t.Skipf("the probe's ENQCMDS at CPL0 ended in %s, not an emulation failure", outcome(enq))
		}
		runWideGuest(t, p, enqcmdsGuest())
	})
	t.Logf("both guests took %v", time.Since(start).Round(time.Microsecond))
}

// outcome is a probe result as a skip message quotes it.
func outcome(r InsnResult) string {
	if r.Detail == "" {
		return string(r.Outcome)
	}
	return fmt.Sprintf("%s (%s)", r.Outcome, r.Detail)
}

// The wide guests' memory, on top of the probe image (see guest.go).
// wideSrcVA's 64 bytes cross from virtual page wideVA0 into wideVA1; the
// page table at widePT maps those two pages to guest-physical pages that
// are far apart and in reverse order, and wideDstVA's page to the accepting
// portal. Everything else in the 2 MiB that widePT covers stays identity
// mapped, and the pages a naive emulator would read instead (the identity
// pages, and the page physically after widePA0) hold decoy bytes.
const (
	widePT     = 0x60000      // 4 KiB page table for virtual 0x200000-0x3fffff
	wideVA0    = 0x210000     // -> widePA0
	wideVA1    = 0x211000     // -> widePA1
	wideDstVA  = 0x212000     // -> portalAccept
	widePA0    = 0x380000     //
	widePA1    = 0x340000     // not widePA0+4096: the source is split physically
	wideSrcVA  = wideVA1 - 43 // 43 bytes in wideVA0, 21 in wideVA1, not 64-aligned
	srcAddr32  = dataAddr + 0x100
	srcENQ1    = dataAddr + 0x200
	srcENQ2    = dataAddr + 0x240
	decoy      = 0xee
	arithFlags = 0x8d5 // OF, SF, ZF, AF, PF, CF
	flagCF     = 1 << 0
	flagPF     = 1 << 2
	flagZF     = 1 << 6

	portalAccept = mmioAddr          // 4 KiB; accepts
	portalRetry  = mmioAddr + 0x1000 // 4 KiB; answers retry

	// Register values above 4 GiB whose low halves are the addr32 form's
	// operands: without the 67 prefix's truncation they are unmapped.
	high32 = 0xffff_ffff_0000_0000
)

// step is a piece of a wide guest's code.
type step struct {
	code   []byte
	asm    string       // Intel syntax, checked by TestWideGuestCode (x86asm does not know the 0f 38 f8 family: GNU as's text there)
	kind   emulate.Kind // godvm's emulator must complete it (KindNone: KVM runs it)
	report bool         // reports RFLAGS on port 0xf3; its arithmetic flags must be flags
	flags  uint64
}

// reportFlags is pushfq; pop rax; out 0xf3, eax.
func reportFlags(want uint64) step {
	return step{code: []byte{0x9c, 0x58, 0xe7, portValue}, asm: "pushfq|pop rax|out 0xf3, eax", report: true, flags: want}
}

// arrival is one 64-byte write a portal received.
type arrival struct {
	gpa  uint64
	kind bus.WideKind
	data [64]byte
}

func (a arrival) String() string {
	return fmt.Sprintf("%v at %#x: % x", a.kind, a.gpa, a.data[:])
}

// wideGuest is one test program with what it must do.
type wideGuest struct {
	steps  []step
	regs   func(*kvm.Regs)
	accept []arrival // what portalAccept must receive, in order
	retry  []arrival // what portalRetry must receive
	counts map[emulate.Kind]uint64
}

// pattern is 64 recognisable bytes.
func pattern(tag byte) [64]byte {
	var b [64]byte
	for i := range b {
		b[i] = tag ^ byte(i*37+1)
	}
	return b
}

// Source operands.
var (
	srcCross = pattern(0x10)
	srcA32   = pattern(0x20)
	srcEnq1  = withDword0(pattern(0x30), 0xdeadbeef) // PRIV set, bits 30:20 set
	srcEnq2  = withDword0(pattern(0x40), 0x7ff12345) // PRIV clear, bits 30:20 set
)

func withDword0(b [64]byte, v uint32) [64]byte {
	binary.LittleEndian.PutUint32(b[0:], v)
	return b
}

// enqcmdsCommand is what ENQCMDS sends (SDM, ENQCMDS "Operation"): the
// source's PASID (bits 19:0) and PRIV (bit 31) kept, bits 30:20 zero, the
// other 60 bytes as they are.
func enqcmdsCommand(src [64]byte) [64]byte {
	return withDword0(src, binary.LittleEndian.Uint32(src[0:])&0x800f_ffff)
}

// movdir64bGuest: MOVDIR64B with its source across two non-contiguous
// pages and its destination through a remapped page, then the addr32 form
// with both registers' upper halves set. MOVDIR64B leaves the flags alone.
func movdir64bGuest() wideGuest {
	return wideGuest{
		steps: []step{
			{code: []byte{0x31, 0xc0}, asm: "xor eax, eax"},
			{code: []byte{0x66, 0x0f, 0x38, 0xf8, 0x16}, asm: "movdir64b rdx, [rsi]", kind: emulate.KindMOVDIR64B},
			reportFlags(flagZF | flagPF),
			{code: []byte{0xf9}, asm: "stc"},
			{code: []byte{0x67, 0x66, 0x0f, 0x38, 0xf8, 0x0f}, asm: "movdir64b ecx, [edi]", kind: emulate.KindMOVDIR64B},
			reportFlags(flagCF | flagZF | flagPF),
		},
		regs: func(r *kvm.Regs) {
			r.RSI, r.RDX = wideSrcVA, wideDstVA+0x40
			r.RDI, r.RCX = high32|srcAddr32, high32|(portalAccept+0x80)
		},
		accept: []arrival{
			{portalAccept + 0x40, bus.MOVDIR64B, srcCross},
			{portalAccept + 0x80, bus.MOVDIR64B, srcA32},
		},
		counts: map[emulate.Kind]uint64{emulate.KindMOVDIR64B: 2},
	}
}

// enqcmdsGuest: ENQCMDS to the accepting portal (ZF clear afterwards) and
// to the retrying one (ZF set), each time with other arithmetic flags set
// beforehand that ENQCMDS must clear. REX.B and REX.R pick r8-r10.
func enqcmdsGuest() wideGuest {
	return wideGuest{
		steps: []step{
			{code: []byte{0x31, 0xc0}, asm: "xor eax, eax"},
			{code: []byte{0xf3, 0x41, 0x0f, 0x38, 0xf8, 0x18}, asm: "enqcmds rbx, [r8]", kind: emulate.KindENQCMDS},
			reportFlags(0),
			{code: []byte{0x83, 0xc8, 0x01, 0xf9}, asm: "or eax, 0x1|stc"},
			{code: []byte{0xf3, 0x45, 0x0f, 0x38, 0xf8, 0x11}, asm: "enqcmds r10, [r9]", kind: emulate.KindENQCMDS},
			reportFlags(flagZF),
		},
		regs: func(r *kvm.Regs) {
			r.R8, r.RBX = srcENQ1, portalAccept+0xc0
			r.R9, r.R10 = srcENQ2, portalRetry+0x40
		},
		accept: []arrival{{portalAccept + 0xc0, bus.ENQCMDS, enqcmdsCommand(srcEnq1)}},
		retry:  []arrival{{portalRetry + 0x40, bus.ENQCMDS, enqcmdsCommand(srcEnq2)}},
		counts: map[emulate.Kind]uint64{emulate.KindENQCMDS: 2},
	}
}

// program lays the steps out from codeAddr and returns the code with the
// trace runWideGuest must see: one line per emulated instruction (RIP
// before and after) and per flags report.
func program(steps []step) (code []byte, want []string) {
	for _, s := range steps {
		at := uint64(codeAddr + len(code))
		code = append(code, s.code...)
		switch {
		case s.kind != emulate.KindNone:
			want = append(want, fmt.Sprintf("%v at %#x, then RIP %#x", s.kind, at, at+uint64(len(s.code))))
		case s.report:
			want = append(want, fmt.Sprintf("flags %#x", s.flags))
		}
	}
	return code, want
}

// patchWide adds the 4 KiB mappings, the sources and the decoys to the
// probe image.
func patchWide(mem []byte) {
	le := binary.LittleEndian
	le.PutUint64(mem[pdAddr+8*1:], widePT|ptePresent|pteWrite) // PD[1]: 0x200000-0x3fffff
	for i := uint64(0); i < 512; i++ {
		le.PutUint64(mem[widePT+8*i:], (0x200000+i<<12)|ptePresent|pteWrite)
	}
	remap := func(va, pa uint64) { le.PutUint64(mem[widePT+8*(va>>12&511):], pa|ptePresent|pteWrite) }
	remap(wideVA0, widePA0)
	remap(wideVA1, widePA1)
	remap(wideDstVA, portalAccept)
	for _, pg := range []uint64{wideVA0, wideVA1, widePA0 + 0x1000} {
		for i := range uint64(0x1000) {
			mem[pg+i] = decoy
		}
	}
	split := wideVA1 - wideSrcVA
	copy(mem[widePA0+wideSrcVA%0x1000:], srcCross[:split])
	copy(mem[widePA1:], srcCross[split:])
	copy(mem[srcAddr32:], srcA32[:])
	copy(mem[srcENQ1:], srcEnq1[:])
	copy(mem[srcENQ2:], srcEnq2[:])
}

// portal is a test device that records 64-byte writes; ordinary accesses
// are recorded as errors.
type portal struct {
	base   uint64
	accept bool
	got    []arrival
	other  []string
}

func (d *portal) Read(off uint64, data []byte) {
	d.other = append(d.other, fmt.Sprintf("%d-byte read at %#x", len(data), d.base+off))
}

func (d *portal) Write(off uint64, data []byte) {
	d.other = append(d.other, fmt.Sprintf("%d-byte write at %#x", len(data), d.base+off))
}

func (d *portal) Write64B(off uint64, data *[64]byte, kind bus.WideKind) bool {
	d.got = append(d.got, arrival{d.base + off, kind, *data})
	return d.accept
}

var _ bus.Wide64 = (*portal)(nil)

// runWideGuest runs g with a fresh emulator and portals, handling exits as
// vmm/exits.go does, and checks everything it promises.
func runWideGuest(t *testing.T, p *prober, g wideGuest) {
	p.pin(t)
	code, want := program(g.steps)
	mem, err := guestmem.FromBytes(guestmem.NewRegion(0, p.mem, -1, 0))
	if err != nil {
		t.Fatal(err)
	}
	var mmio bus.Bus
	accept, retry := &portal{base: portalAccept, accept: true}, &portal{base: portalRetry}
	if err := mmio.Register(portalAccept, 0x1000, "accepting portal", accept); err != nil {
		t.Fatal(err)
	}
	if err := mmio.Register(portalRetry, 0x1000, "retrying portal", retry); err != nil {
		t.Fatal(err)
	}
	emu := emulate.New(mem, &mmio)

	var trace []string
	onExit := func(cpu *kvm.VCPU, run *kvm.Run) (bool, error) {
		switch run.ExitReason() {
		case kvm.ExitInternalError:
			k, before, after, ok, err := emulationExit(emu, cpu, run)
			if !ok || err != nil {
				if err != nil {
					err = fmt.Errorf("after %q: %w", trace, err)
				}
				return false, err
			}
			trace = append(trace, fmt.Sprintf("%v at %#x, then RIP %#x", k, before, after))
			return true, nil
		case kvm.ExitIO:
			io := run.IO()
			d, err := run.IOData()
			if err != nil {
				return false, err
			}
			if io.Port == portValue && io.Direction == kvm.IODirOut && len(d) == 4 {
				trace = append(trace, fmt.Sprintf("flags %#x", binary.LittleEndian.Uint32(d)&arithFlags))
				return true, nil
			}
		}
		return false, nil
	}

	start := time.Now()
	ex, err := p.runGuest(guest{code: code, regs: g.regs, patch: patchWide, onExit: onExit})
	elapsed := time.Since(start)
	if err != nil {
		t.Fatalf("guest: %v (trace so far %q)", err, trace)
	}
	t.Logf("guest ran in %v; trace %q; stats %v", elapsed.Round(time.Microsecond), trace, &emu.Stats)
	if r := classify("wide guest", code, ex, nil); r.Outcome != Executed {
		t.Fatalf("the guest did not reach its end: %s %s (trace %q)", r.Outcome, r.Detail, trace)
	}
	// KVM reports an OUT's exit with RIP at it or past it.
	if end := uint64(codeAddr + len(code)); ex.regs.RIP < end || ex.regs.RIP > end+uint64(len(doneSeq)) {
		t.Errorf("final RIP %#x, want the done sequence at %#x", ex.regs.RIP, end)
	}
	if strings.Join(trace, "\n") != strings.Join(want, "\n") {
		t.Errorf("trace\n  %s\nwant\n  %s", strings.Join(trace, "\n  "), strings.Join(want, "\n  "))
	}
	checkArrivals(t, "accepting portal", accept, g.accept, p.mem)
	checkArrivals(t, "retrying portal", retry, g.retry, p.mem)
	for k := emulate.KindNone; k <= emulate.KindFault; k++ {
		if got := emu.Stats.Count(k); got != g.counts[k] {
			t.Errorf("emulate.Stats: %v = %d, want %d (%v)", k, got, g.counts[k], &emu.Stats)
		}
	}
	if n := emu.Stats.Failed(); n != 0 {
		t.Errorf("emulate.Stats: %d failed", n)
	}
}

func checkArrivals(t *testing.T, name string, d *portal, want []arrival, mem []byte) {
	t.Helper()
	for _, o := range d.other {
		t.Errorf("%s: unexpected %s", name, o)
	}
	if len(d.got) != len(want) {
		t.Errorf("%s received %d writes, want %d:\n  %s", name, len(d.got), len(want), arrivals(d.got))
		return
	}
	naive := mem[widePA0+wideSrcVA%0x1000:][:64] // physically contiguous from the first page
	for i, w := range want {
		g := d.got[i]
		if g != w {
			msg := fmt.Sprintf("%s write %d:\n  got  %v\n  want %v", name, i, g, w)
			if string(g.data[:]) == string(naive) {
				msg += "\n  (the bytes physically contiguous with the source's first page: the second page was not translated)"
			}
			t.Error(msg)
		}
	}
}

func arrivals(a []arrival) string {
	s := make([]string, len(a))
	for i, x := range a {
		s[i] = x.String()
	}
	return strings.Join(s, "\n  ")
}

// newLiveProber opens /dev/kvm (skipping without one) and sets up a
// prober as RunWith does, with a generous per-guest timeout for a loaded
// host.
func newLiveProber(t *testing.T) *prober {
	t.Helper()
	if _, err := os.Stat(kvm.DevicePath); errors.Is(err, os.ErrNotExist) {
		t.Skip("/dev/kvm absent on this host: skipping a test that runs a guest")
	}
	sys, err := kvm.Open()
	if err != nil {
		t.Fatalf("/dev/kvm exists but cannot be used: %v", err)
	}
	t.Cleanup(func() { sys.Close() })
	sup, err := sys.SupportedCPUID()
	if err != nil {
		t.Fatal(err)
	}
	ef, err := sys.CheckExtension(kvm.CapExitOnEmulationFailure)
	if err != nil {
		t.Fatal(err)
	}
	mem, err := unix.Mmap(-1, 0, memSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Munmap(mem) })
	p := &prober{sys: sys, opts: Options{Timeout: 5 * time.Second}, mem: mem, sup: sup, feat: hostFeatures(sup), exitOnEF: ef != 0}
	p.pin(t)
	return p
}

// pin keeps the calling test's goroutine on its OS thread, which the
// prober's watchdog signals.
func (p *prober) pin(t *testing.T) {
	runtime.LockOSThread()
	t.Cleanup(runtime.UnlockOSThread)
	p.tid = unix.Gettid()
}

// TestWideGuestCode checks the wide guests' hand-assembled bytes (all but
// the 0f 38 f8 family, which x86asm does not know; those are GNU as's
// encodings) and their layout. It needs no KVM.
func TestWideGuestCode(t *testing.T) {
	for _, g := range []wideGuest{movdir64bGuest(), enqcmdsGuest()} {
		for _, s := range g.steps {
			if s.kind != emulate.KindNone {
				continue
			}
			if got := strings.Join(disasm(t, s.code), "|"); got != s.asm {
				t.Errorf("% x: %q, want %q", s.code, got, s.asm)
			}
		}
	}
	if widePA1 == widePA0+0x1000 || widePA0 == widePA1+0x1000 {
		t.Error("the source's pages are physically adjacent")
	}
	if s := uint64(wideSrcVA); s/0x1000 == (s+63)/0x1000 || s%64 == 0 {
		t.Errorf("source %#x does not cross a page, or is aligned", s)
	}
	mem := make([]byte, memSize)
	writeImage(mem, false)
	patchWide(mem)
	le := binary.LittleEndian
	walk := func(va uint64) uint64 {
		e2 := le.Uint64(mem[pdAddr+8*(va>>21&511):])
		if e2&pteHuge != 0 {
			return e2&^0x1fffff | va&0x1fffff
		}
		return le.Uint64(mem[e2&^0xfff+8*(va>>12&511):])&^0xfff | va&0xfff
	}
	var src [64]byte
	for i := range src {
		src[i] = mem[walk(wideSrcVA+uint64(i))]
	}
	if src != srcCross {
		t.Errorf("the page tables map the source to % x", src)
	}
	for va, pa := range map[uint64]uint64{wideDstVA + 0x40: portalAccept + 0x40, 0x200000: 0x200000, 0x3ff000: 0x3ff000, codeAddr: codeAddr, dataAddr: dataAddr} {
		if got := walk(va); got != pa {
			t.Errorf("%#x -> %#x, want %#x", va, got, pa)
		}
	}
}

// emulationExit completes a KVM emulation-failure exit with godvm's
// emulator, as vmm/exits.go does: ok is false for any other exit (the
// caller handles it); otherwise k is what was emulated and before/after
// are the RIPs around it.
func emulationExit(emu *emulate.Emulator, cpu *kvm.VCPU, run *kvm.Run) (k emulate.Kind, before, after uint64, ok bool, err error) {
	if run.ExitReason() != kvm.ExitInternalError {
		return k, 0, 0, false, nil
	}
	ie := run.InternalError()
	if ie.Suberror != kvm.InternalErrorEmulation {
		return k, 0, 0, false, nil
	}
	r, err := cpu.Regs()
	if err != nil {
		return k, 0, 0, true, err
	}
	if k, err = emu.Emulate(cpu, ie.InsnBytes); err != nil {
		return k, r.RIP, 0, true, err
	}
	a, err := cpu.Regs()
	if err != nil {
		return k, r.RIP, 0, true, err
	}
	return k, r.RIP, a.RIP, true, nil
}
