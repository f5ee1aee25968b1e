//go:build linux && amd64

package probe

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"strings"
	"testing"
	"unsafe"

	"godvm/guestmem"
	"godvm/internal/x86native"
	"godvm/kvm"
	"godvm/vmm/emulate"
)

// TestLiveEmulateFPU runs a kernel_fpu_begin()-like stretch of x87 and
// SSE code (LDMXCSR, x87 control, x87 loads and stores, the SSE2 integer
// operations blake2s_compress_ssse3 uses, PSHUFB, moves between general
// and XMM registers, CVTSI2SD/SQRTSD, FXSAVE/FXRSTOR) in the probe's tiny
// CPL0 guest on the real /dev/kvm, with godvm's emulator completing every
// emulation-failure exit as vmm/exits.go does, and the same code natively
// in this process (internal/x86native), both from the same registers and
// FXSAVE image. The guest's final FXSAVE image, general registers and data
// buffer must be the native run's. On kvm_pvm most of it exits to godvm
// (the state crosses KVM_GET/SET_XSAVE between KVM's emulator, which runs
// the rest, and godvm's); where the guest executes it natively, it is a
// check of the harness.
func TestLiveEmulateFPU(t *testing.T) {
	p := newLiveProber(t)
	const (
		imgIn  = dataAddr + 0x2000 // FXSAVE image the guest loads (64-aligned)
		imgOut = imgIn + 0x200     // the guest's final FXSAVE
		regOut = imgIn + 0x400     // the guest's final general registers
		buf    = dataAddr + 0x3000 // the code's data (RSI), 1 KiB
		bufLen = 0x400
	)
	// The code under test: RSI = buffer, RBP = buffer+0x200 (an FXSAVE
	// area); RDI is the guest's own (image pointer), not used.
	seq := [][]byte{
		{0x0f, 0xae, 0x16},                   // ldmxcsr [rsi]
		{0xdb, 0xe3},                         // fninit
		{0xd9, 0x7e, 0x10},                   // fnstcw [rsi+0x10]
		{0xdf, 0xe0},                         // fnstsw ax
		{0xd9, 0x6e, 0x12},                   // fldcw [rsi+0x12]
		{0xd9, 0xe8},                         // fld1
		{0xd9, 0xee},                         // fldz
		{0xdd, 0x46, 0x20},                   // fld qword [rsi+0x20]
		{0xdd, 0x5e, 0x28},                   // fstp qword [rsi+0x28]
		{0xd9, 0x5e, 0x34},                   // fstp dword [rsi+0x34]
		{0xdb, 0xe2},                         // fnclex
		{0xdd, 0x7e, 0x30},                   // fnstsw [rsi+0x30]
		{0x48, 0x0f, 0xae, 0x45, 0x00},       // fxsave64 [rbp]
		{0x0f, 0x77},                         // emms
		{0xf3, 0x0f, 0x6f, 0x46, 0x40},       // movdqu xmm0, [rsi+0x40]
		{0x66, 0x0f, 0x6f, 0x4e, 0x50},       // movdqa xmm1, [rsi+0x50]
		{0x66, 0x0f, 0xef, 0xd2},             // pxor xmm2, xmm2
		{0x66, 0x0f, 0xfe, 0xc1},             // paddd xmm0, xmm1
		{0x66, 0x0f, 0x70, 0xd8, 0x39},       // pshufd xmm3, xmm0, 0x39
		{0x66, 0x0f, 0xef, 0xc3},             // pxor xmm0, xmm3
		{0x66, 0x0f, 0x38, 0x00, 0xc1},       // pshufb xmm0, xmm1
		{0x66, 0x0f, 0x72, 0xf3, 0x07},       // pslld xmm3, 7
		{0x66, 0x0f, 0x72, 0xd1, 0x19},       // psrld xmm1, 25
		{0x66, 0x0f, 0xeb, 0xd9},             // por xmm3, xmm1
		{0x66, 0x0f, 0x62, 0xe0},             // punpckldq xmm4, xmm0
		{0x66, 0x0f, 0x6c, 0xe3},             // punpcklqdq xmm4, xmm3
		{0x66, 0x0f, 0x6e, 0xe8},             // movd xmm5, eax
		{0x66, 0x48, 0x0f, 0x7e, 0xe3},       // movq rbx, xmm4
		{0x66, 0x0f, 0x74, 0xf6},             // pcmpeqb xmm6, xmm6
		{0x66, 0x0f, 0xd7, 0xc8},             // pmovmskb ecx, xmm0
		{0x0f, 0x57, 0xff},                   // xorps xmm7, xmm7
		{0xf2, 0x0f, 0x10, 0x7e, 0x20},       // movsd xmm7, [rsi+0x20]
		{0xf2, 0x4c, 0x0f, 0x2a, 0xc2},       // cvtsi2sd xmm8, rdx
		{0xf2, 0x45, 0x0f, 0x51, 0xc8},       // sqrtsd xmm9, xmm8
		{0x66, 0x0f, 0xd4, 0xe4},             // paddq xmm4, xmm4
		{0xf3, 0x0f, 0x7f, 0x46, 0x60},       // movdqu [rsi+0x60], xmm0
		{0x66, 0x0f, 0xe7, 0x66, 0x70},       // movntdq [rsi+0x70], xmm4
		{0x0f, 0xae, 0x5e, 0x38},             // stmxcsr [rsi+0x38]
		{0x48, 0x0f, 0xae, 0x4d, 0x00},       // fxrstor64 [rbp]
		{0xdd, 0x5e, 0x18},                   // fstp qword [rsi+0x18] (the 1.0 FXRSTOR brought back)
		{0x66, 0x41, 0x0f, 0xc4, 0xd0, 0x03}, // pinsrw xmm2, r8d, 3
		{0x66, 0x44, 0x0f, 0xc5, 0xca, 0x03}, // pextrw r9d, xmm2, 3
	}
	var code []byte
	for _, s := range seq {
		code = append(code, s...)
	}
	// The input: a valid FXSAVE image with recognisable registers, and
	// the buffer's values.
	var in x86native.State
	le := binary.LittleEndian
	le.PutUint16(in.FX[0:], 0x37f)
	le.PutUint32(in.FX[24:], 0x1f80)
	for i := range 256 {
		in.FX[160+i] = byte(i*7 + 3)
	}
	data := make([]byte, bufLen)
	le.PutUint32(data[0:], 0x3f80) // MXCSR: round toward -inf
	le.PutUint16(data[0x12:], 0x27f)
	le.PutUint64(data[0x20:], math.Float64bits(math.Pi))
	for i := 0x40; i < 0x60; i++ {
		data[i] = byte(i*13 + 1)
	}
	in.GPR = [16]uint64{0: 0x1111, 1: 0x2222, 2: 0x7654_3210_fedc, 3: 0x4444, 5: 0, 8: 0xbeef, 9: 0x9999}

	// Natively.
	host := alignedHost(bufLen)
	copy(host, data)
	nat := in
	nat.GPR[6] = uint64(uintptr(unsafe.Pointer(&host[0])))
	nat.GPR[5] = nat.GPR[6] + 0x200
	out, err := x86native.Run(code, &nat)
	if err != nil || out.Fault != "" {
		t.Fatalf("native run: %v %s", err, out.Fault)
	}

	// In the guest: fxrstor64 [rdi]; code; fxsave64 [rdi+0x200]; the
	// general registers to [rdi+0x400].
	g := []byte{0x48, 0x0f, 0xae, 0x0f}
	g = append(g, code...)
	g = append(g, 0x48, 0x0f, 0xae, 0x87, 0x00, 0x02, 0x00, 0x00) // fxsave64 [rdi+0x200]
	for r := range 16 {
		if r == 4 || r == 6 || r == 7 {
			continue
		}
		rex := byte(0x48)
		if r >= 8 {
			rex |= 4
		}
		g = append(g, rex, 0x89, 0x87|byte(r&7)<<3) // mov [rdi+disp32], r
		g = binary.LittleEndian.AppendUint32(g, uint32(0x400+8*r))
	}
	mem, err := guestmem.FromBytes(guestmem.NewRegion(0, p.mem, -1, 0))
	if err != nil {
		t.Fatal(err)
	}
	emu := emulate.New(mem, nil)
	var trace []string
	onExit := func(cpu *kvm.VCPU, run *kvm.Run) (bool, error) {
		k, before, _, ok, err := emulationExit(emu, cpu, run)
		if !ok || err != nil {
			if err != nil {
				err = fmt.Errorf("after %d emulated instructions: %w", len(trace), err)
			}
			return false, err
		}
		trace = append(trace, fmt.Sprintf("%v@%#x", k, before-codeAddr))
		return true, nil
	}
	patch := func(m []byte) {
		copy(m[imgIn:], in.FX[:])
		copy(m[buf:], data)
	}
	regs := func(r *kvm.Regs) {
		r.RAX, r.RCX, r.RDX, r.RBX = in.GPR[0], in.GPR[1], in.GPR[2], in.GPR[3]
		r.R8, r.R9 = in.GPR[8], in.GPR[9]
		r.RSI, r.RBP, r.RDI = buf, buf+0x200, imgIn
	}
	ex, err := p.runGuest(guest{code: g, regs: regs, patch: patch, onExit: onExit})
	if err != nil {
		t.Fatalf("guest: %v", err)
	}
	if r := classify("fpu guest", g, ex, nil); r.Outcome != Executed {
		t.Fatalf("the guest did not reach its end: %s %s (emulated so far: %s)", r.Outcome, r.Detail, strings.Join(trace, " "))
	}
	t.Logf("godvm emulated %d of %d instructions (%v): %s", len(trace), len(seq), &emu.Stats, strings.Join(trace, " "))

	gfx := p.mem[imgOut : imgOut+416]
	for _, f := range []struct {
		name     string
		off, len int
	}{{"FCW", 0, 2}, {"FSW", 2, 2}, {"FTW", 4, 1}, {"MXCSR", 24, 4}} {
		if g, w := gfx[f.off:f.off+f.len], out.FX[f.off:f.off+f.len]; !bytes.Equal(g, w) {
			t.Errorf("%s % x, native % x", f.name, g, w)
		}
	}
	for i := range 8 {
		if g, w := gfx[32+16*i:42+16*i], out.FX[32+16*i:42+16*i]; !bytes.Equal(g, w) {
			t.Errorf("ST%d % x, native % x", i, g, w)
		}
	}
	for i := range 16 {
		if g, w := gfx[160+16*i:176+16*i], out.FX[160+16*i:176+16*i]; !bytes.Equal(g, w) {
			t.Errorf("XMM%d % x, native % x", i, g, w)
		}
	}
	for r := range 16 {
		if r == 4 || r == 6 || r == 7 || r == 5 {
			continue
		}
		if g, w := le.Uint64(p.mem[regOut+8*r:]), out.GPR[r]; g != w {
			t.Errorf("GPR %d = %#x, native %#x", r, g, w)
		}
	}
	gb, hb := p.mem[buf:buf+bufLen], host
	// The FXSAVE at RBP: FOP/FIP/FDP (bytes 6-23) are the CPU's business
	// (AMD stores them only with an exception pending).
	gbc, hbc := append([]byte(nil), gb...), append([]byte(nil), hb...)
	clear(gbc[0x206:0x218])
	clear(hbc[0x206:0x218])
	if !bytes.Equal(gbc, hbc) {
		for i := range gbc {
			if gbc[i] != hbc[i] {
				t.Errorf("buffer differs from +%#x: % x, native % x", i, gbc[i:min(i+16, len(gbc))], hbc[i:min(i+16, len(hbc))])
				break
			}
		}
	}
	if emu.Stats.Failed() != 0 {
		t.Errorf("%d emulations failed", emu.Stats.Failed())
	}
}

// alignedHost is a 64-byte aligned host buffer.
func alignedHost(n int) []byte {
	raw := make([]byte, n+64)
	off := (64 - int(uintptr(unsafe.Pointer(&raw[0]))%64)) % 64
	return raw[off : off+n]
}
