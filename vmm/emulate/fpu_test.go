package emulate

import (
	"bytes"
	"encoding/binary"
	"math"
	"testing"

	"godvm/kvm"
)

// The x87/SSE instructions on a fake vCPU: what the native comparison
// (native_test.go) cannot run in a test process, i.e. the faults decided by
// control registers, alignment, page permissions and MXCSR_MASK, and the
// plumbing (one KVM_SET_XSAVE only when the state changed, XSTATE_BV).

// withFX edits the fake vCPU's FXSAVE image.
func withFX(c *fakeCPU, edit func(fx []byte)) {
	if c.xsave == nil {
		c.xsave = initXSave()
	}
	edit(c.xsave.Bytes())
}

func fxOf(c *fakeCPU) []byte {
	if c.xsave == nil {
		c.xsave = initXSave()
	}
	return c.xsave.Bytes()
}

var le16, le32, le64 = binary.LittleEndian.Uint16, binary.LittleEndian.Uint32, binary.LittleEndian.Uint64

// wantFPUFault is wantFault plus: the x87/SSE state not written.
func wantFPUFault(want injection) func(t *testing.T, r *rig, c *fakeCPU, k Kind, err error) {
	return func(t *testing.T, r *rig, c *fakeCPU, k Kind, err error) {
		t.Helper()
		wantFault(want)(t, r, c, k, err)
		if c.setXSave != 0 {
			t.Errorf("KVM_SET_XSAVE %d times on a fault", c.setXSave)
		}
	}
}

func nm() injection { return injection{vector: vectorNM} }
func mf() injection { return injection{vector: vectorMF} }
func xm() injection { return injection{vector: vectorXM} }

var (
	ldmxcsrRSP  = []byte{0x0f, 0xae, 0x54, 0x24, 0x04} // ldmxcsr [rsp+4] (kernel_fpu_begin_mask)
	stmxcsrRSI  = []byte{0x0f, 0xae, 0x1e}             // stmxcsr [rsi]
	pxorX0X1    = []byte{0x66, 0x0f, 0xef, 0xc1}       // pxor xmm0, xmm1
	pxorX0RSI   = []byte{0x66, 0x0f, 0xef, 0x06}       // pxor xmm0, [rsi]
	movdqaX0RSI = []byte{0x66, 0x0f, 0x6f, 0x06}       // movdqa xmm0, [rsi]
	movdquRSIX0 = []byte{0xf3, 0x0f, 0x7f, 0x06}       // movdqu [rsi], xmm0
	sqrtsdX0RSI = []byte{0xf2, 0x0f, 0x51, 0x06}       // sqrtsd xmm0, [rsi]
	fninit      = []byte{0xdb, 0xe3}
	fld1        = []byte{0xd9, 0xe8}
	emms        = []byte{0x0f, 0x77}
	fwait       = []byte{0x9b}
)

func TestMXCSRInstructions(t *testing.T) {
	run(t, []emuCase{
		{name: "ldmxcsr [rsp+4] as kernel_fpu_begin runs it", code: ldmxcsrRSP,
			setup: func(r *rig, c *fakeCPU) {
				c.regs.RSP = 0x6000
				binary.LittleEndian.PutUint32(r.ram[0x6004:], 0x1f80)
				withFX(c, func(fx []byte) { binary.LittleEndian.PutUint32(fx[kvm.FXMXCSR:], 0x7fbf) })
			},
			check: func(t *testing.T, r *rig, c *fakeCPU, k Kind, err error) {
				wantOK(t, k, err, KindLDMXCSR)
				wantRIP(t, c, codeAddr+5)
				fx := fxOf(c)
				if le32(fx[kvm.FXMXCSR:]) != 0x1f80 || c.setXSave != 1 || le64(fx[kvm.XSaveBV:])&3 != 3 {
					t.Errorf("MXCSR %#x after %d KVM_SET_XSAVE, XSTATE_BV %#x", le32(fx[kvm.FXMXCSR:]), c.setXSave, le64(fx[kvm.XSaveBV:]))
				}
				if r.emu.Stats.String() != "ldmxcsr=1" {
					t.Errorf("stats %s", &r.emu.Stats)
				}
			}},
		{name: "ldmxcsr of a reserved bit raises #GP(0)", code: ldmxcsrRSP,
			setup: func(r *rig, c *fakeCPU) {
				c.regs.RSP = 0x6000
				binary.LittleEndian.PutUint32(r.ram[0x6004:], 0x1f80|1<<18) // MXCSR_MASK is 0x2ffff
			},
			check: wantFPUFault(gp0())},
		{name: "ldmxcsr with MXCSR_MASK 0 uses the default 0xffbf", code: ldmxcsrRSP,
			setup: func(r *rig, c *fakeCPU) {
				c.regs.RSP = 0x6000
				binary.LittleEndian.PutUint32(r.ram[0x6004:], 0x1fc0) // DAZ: not in 0xffbf
				withFX(c, func(fx []byte) { binary.LittleEndian.PutUint32(fx[kvm.FXMXCSRMask:], 0) })
			},
			check: wantFPUFault(gp0())},
		{name: "stmxcsr stores and writes no state", code: stmxcsrRSI,
			setup: func(r *rig, c *fakeCPU) {
				c.regs.RSI = 0x6000
				withFX(c, func(fx []byte) { binary.LittleEndian.PutUint32(fx[kvm.FXMXCSR:], 0x9fa5) })
			},
			check: func(t *testing.T, r *rig, c *fakeCPU, k Kind, err error) {
				wantOK(t, k, err, KindSTMXCSR)
				wantRIP(t, c, codeAddr+3)
				if le32(r.ram[0x6000:]) != 0x9fa5 || c.setXSave != 0 {
					t.Errorf("stored %#x, %d KVM_SET_XSAVE", le32(r.ram[0x6000:]), c.setXSave)
				}
			}},
		{name: "ldmxcsr with a register operand is #UD", code: []byte{0x0f, 0xae, 0xd0}, check: func(t *testing.T, r *rig, c *fakeCPU, k Kind, err error) {
			if err == nil {
				wantFPUFault(ud())(t, r, c, k, err)
			}
		}},
	})
}

// The control-register checks, in the SDM's order.
func TestFPUAvailability(t *testing.T) {
	cr0 := func(set uint64) func(r *rig, c *fakeCPU) {
		return func(r *rig, c *fakeCPU) { c.sregs.CR0 |= set; c.regs.RSP = 0x6000 }
	}
	noOSFXSR := func(r *rig, c *fakeCPU) { c.sregs.CR4 &^= cr4OSFXSR }
	run(t, []emuCase{
		{name: "pxor with CR0.TS: #NM", code: pxorX0X1, setup: cr0(cr0TS), check: wantFPUFault(nm())},
		{name: "pxor with CR0.EM: #UD", code: pxorX0X1, setup: cr0(cr0EM), check: wantFPUFault(ud())},
		{name: "pxor with CR0.EM and CR0.TS: #UD first", code: pxorX0X1, setup: cr0(cr0EM | cr0TS), check: wantFPUFault(ud())},
		{name: "pxor without CR4.OSFXSR: #UD", code: pxorX0X1, setup: noOSFXSR, check: wantFPUFault(ud())},
		{name: "ldmxcsr with CR0.TS: #NM", code: ldmxcsrRSP, setup: cr0(cr0TS), check: wantFPUFault(nm())},
		{name: "ldmxcsr without CR4.OSFXSR: #UD", code: ldmxcsrRSP, setup: noOSFXSR, check: wantFPUFault(ud())},
		{name: "fninit with CR0.TS: #NM", code: fninit, setup: cr0(cr0TS), check: wantFPUFault(nm())},
		{name: "fninit with CR0.EM: #NM", code: fninit, setup: cr0(cr0EM), check: wantFPUFault(nm())},
		{name: "fninit without CR4.OSFXSR runs", code: fninit, setup: noOSFXSR,
			check: func(t *testing.T, r *rig, c *fakeCPU, k Kind, err error) { wantOK(t, k, err, KindX87) }},
		{name: "emms with CR0.EM: #UD", code: emms, setup: cr0(cr0EM), check: wantFPUFault(ud())},
		{name: "emms with CR0.TS: #NM", code: emms, setup: cr0(cr0TS), check: wantFPUFault(nm())},
		{name: "fxsave with CR0.TS: #NM", code: []byte{0x0f, 0xae, 0x06}, setup: cr0(cr0TS), check: wantFPUFault(nm())},
		{name: "fwait with CR0.MP and CR0.TS: #NM", code: fwait, setup: cr0(cr0TS), check: wantFPUFault(nm())},
		{name: "fwait with CR0.TS but not CR0.MP runs", code: fwait,
			setup: func(r *rig, c *fakeCPU) { c.sregs.CR0 = c.sregs.CR0&^cr0MP | cr0TS },
			check: func(t *testing.T, r *rig, c *fakeCPU, k Kind, err error) { wantOK(t, k, err, KindFWAIT) }},
		{name: "lock pxor: #UD", code: append([]byte{0xf0}, pxorX0X1...), check: wantFPUFault(ud())},
	})
}

// pending makes an unmasked invalid-operation exception pending.
func pending(r *rig, c *fakeCPU) {
	withFX(c, func(fx []byte) {
		binary.LittleEndian.PutUint16(fx[kvm.FXFCW:], 0x37e)
		binary.LittleEndian.PutUint16(fx[kvm.FXFSW:], fswB|fswES|excIE)
	})
}

func TestX87Exceptions(t *testing.T) {
	run(t, []emuCase{
		{name: "fld1 with an exception pending: #MF", code: fld1, setup: pending, check: wantFPUFault(mf())},
		{name: "fwait with an exception pending: #MF", code: fwait, setup: pending, check: wantFPUFault(mf())},
		{name: "emms with an exception pending: #MF", code: emms, setup: pending, check: wantFPUFault(mf())},
		{name: "fninit clears a pending exception", code: fninit, setup: pending,
			check: func(t *testing.T, r *rig, c *fakeCPU, k Kind, err error) {
				wantOK(t, k, err, KindX87)
				fx := fxOf(c)
				if le16(fx[kvm.FXFSW:]) != 0 || le16(fx[kvm.FXFCW:]) != 0x37f || fx[kvm.FXFTW] != 0 {
					t.Errorf("FSW %#x FCW %#x FTW %#x", le16(fx[kvm.FXFSW:]), le16(fx[kvm.FXFCW:]), fx[kvm.FXFTW])
				}
			}},
		{name: "fnstsw ax with an exception pending", code: []byte{0xdf, 0xe0}, setup: pending,
			check: func(t *testing.T, r *rig, c *fakeCPU, k Kind, err error) {
				wantOK(t, k, err, KindX87)
				if c.regs.RAX != fswB|fswES|excIE || c.setXSave != 0 {
					t.Errorf("AX %#x, %d KVM_SET_XSAVE", c.regs.RAX, c.setXSave)
				}
			}},
		{name: "fld1 into a full stack, IE unmasked: nothing loaded, ES set", code: fld1,
			setup: func(r *rig, c *fakeCPU) {
				withFX(c, func(fx []byte) {
					binary.LittleEndian.PutUint16(fx[kvm.FXFCW:], 0x37e)
					fx[kvm.FXFTW] = 0xff
				})
			},
			check: func(t *testing.T, r *rig, c *fakeCPU, k Kind, err error) {
				wantOK(t, k, err, KindX87)
				fsw := le16(fxOf(c)[kvm.FXFSW:])
				if fsw != fswB|fswC1|fswES|fswSF|excIE {
					t.Errorf("FSW %#x: want IE, SF, C1 (overflow), ES and B, TOP unchanged", fsw)
				}
			}},
		{name: "fstp m64 of 1e-320 with UE unmasked stores nothing, does not pop", code: []byte{0xdd, 0x1e},
			setup: func(r *rig, c *fakeCPU) {
				c.regs.RSI = 0x6000
				copy(r.ram[0x6000:], bytes.Repeat([]byte{0xaa}, 8))
				withFX(c, func(fx []byte) {
					binary.LittleEndian.PutUint16(fx[kvm.FXFCW:], 0x36f) // UM clear
					fx[kvm.FXFTW] = 1
					binary.LittleEndian.PutUint64(fx[kvm.FXST0:], 0x8000_0000_0000_0001)
					binary.LittleEndian.PutUint16(fx[kvm.FXST0+8:], extBias-1063)
				})
			},
			check: func(t *testing.T, r *rig, c *fakeCPU, k Kind, err error) {
				wantOK(t, k, err, KindX87)
				fx := fxOf(c)
				if le64(r.ram[0x6000:]) != 0xaaaa_aaaa_aaaa_aaaa || fx[kvm.FXFTW] != 1 || le16(fx[kvm.FXFSW:]) != fswB|fswES|excUE {
					t.Errorf("memory %#x FTW %#x FSW %#x", le64(r.ram[0x6000:]), fx[kvm.FXFTW], le16(fx[kvm.FXFSW:]))
				}
			}},
		{name: "fnstenv in real mode is not emulated", code: []byte{0xd9, 0x36},
			setup: func(r *rig, c *fakeCPU) {
				c.sregs = prot32(0, 0)
				c.sregs.CR0 = 0
			},
			check: func(t *testing.T, r *rig, c *fakeCPU, k Kind, err error) {
				wantUnhandled(t, err, "real-mode format")
			}},
	})
}

func TestSIMDExceptions(t *testing.T) {
	sqrtOfMinus1 := func(mxcsr uint32, osxmmexcpt bool) func(r *rig, c *fakeCPU) {
		return func(r *rig, c *fakeCPU) {
			c.regs.RSI = 0x6000
			binary.LittleEndian.PutUint64(r.ram[0x6000:], 0xbff0_0000_0000_0000)
			withFX(c, func(fx []byte) {
				binary.LittleEndian.PutUint32(fx[kvm.FXMXCSR:], mxcsr)
				binary.LittleEndian.PutUint64(fx[kvm.FXXMM0:], 0x1234)
			})
			if !osxmmexcpt {
				c.sregs.CR4 &^= cr4OSXMMEXCP
			}
		}
	}
	// The fault keeps the MXCSR flag, and nothing else changes.
	flagged := func(want injection) func(t *testing.T, r *rig, c *fakeCPU, k Kind, err error) {
		return func(t *testing.T, r *rig, c *fakeCPU, k Kind, err error) {
			wantFault(want)(t, r, c, k, err)
			fx := fxOf(c)
			if le32(fx[kvm.FXMXCSR:]) != 0x1f01 || le64(fx[kvm.FXXMM0:]) != 0x1234 || c.setXSave != 1 {
				t.Errorf("MXCSR %#x XMM0 %#x after %d KVM_SET_XSAVE: want IE set, XMM0 unchanged",
					le32(fx[kvm.FXMXCSR:]), le64(fx[kvm.FXXMM0:]), c.setXSave)
			}
		}
	}
	run(t, []emuCase{
		{name: "sqrtsd of -1 with IE unmasked: #XM", code: sqrtsdX0RSI, setup: sqrtOfMinus1(0x1f00, true), check: flagged(xm())},
		{name: "sqrtsd of -1 with IE unmasked, no OSXMMEXCPT: #UD", code: sqrtsdX0RSI, setup: sqrtOfMinus1(0x1f00, false), check: flagged(ud())},
		{name: "sqrtsd of -1 masked: the default NaN", code: sqrtsdX0RSI, setup: sqrtOfMinus1(0x1f80, true),
			check: func(t *testing.T, r *rig, c *fakeCPU, k Kind, err error) {
				wantOK(t, k, err, KindSSE)
				fx := fxOf(c)
				if le32(fx[kvm.FXMXCSR:]) != 0x1f81 || le64(fx[kvm.FXXMM0:]) != 0xfff8_0000_0000_0000 {
					t.Errorf("MXCSR %#x XMM0 %#x", le32(fx[kvm.FXMXCSR:]), le64(fx[kvm.FXXMM0:]))
				}
			}},
	})
}

func TestSSEAlignment(t *testing.T) {
	at := func(rsi uint64, mxcsr uint32) func(r *rig, c *fakeCPU) {
		return func(r *rig, c *fakeCPU) {
			c.regs.RSI = rsi
			withFX(c, func(fx []byte) { binary.LittleEndian.PutUint32(fx[kvm.FXMXCSR:], mxcsr) })
		}
	}
	ok := func(t *testing.T, r *rig, c *fakeCPU, k Kind, err error) { wantOK(t, k, err, KindSSE) }
	run(t, []emuCase{
		{name: "movdqa misaligned: #GP(0)", code: movdqaX0RSI, setup: at(0x6008, 0x1f80), check: wantFPUFault(gp0())},
		{name: "movdqa misaligned with MXCSR.MM: still #GP(0)", code: movdqaX0RSI, setup: at(0x6008, 0x1f80|mxcsrMM), check: wantFPUFault(gp0())},
		{name: "pxor xmm0, m128 misaligned: #GP(0)", code: pxorX0RSI, setup: at(0x6004, 0x1f80), check: wantFPUFault(gp0())},
		{name: "pxor xmm0, m128 misaligned with MXCSR.MM", code: pxorX0RSI, setup: at(0x6004, 0x1f80|mxcsrMM), check: ok},
		{name: "movdqu misaligned", code: movdquRSIX0, setup: at(0x6003, 0x1f80), check: ok},
		{name: "movdqa aligned", code: movdqaX0RSI, setup: at(0x6010, 0x1f80), check: ok},
		{name: "fxsave misaligned: #GP(0)", code: []byte{0x0f, 0xae, 0x06}, setup: at(0x6008, 0x1f80), check: wantFPUFault(gp0())},
	})
}

func TestSSEMemoryFaults(t *testing.T) {
	run(t, []emuCase{
		{name: "movdqu store across into a read-only page: #PF, the first page untouched", code: movdquRSIX0,
			setup: func(r *rig, c *fakeCPU) {
				c.pages = map[uint64]uint64{codeAddr: codeAddr, 0x6000: 0x6000, 0x7000: 0x7000 | pgP}
				c.regs.RSI = 0x6ff8
				withFX(c, func(fx []byte) { copy(fx[kvm.FXXMM0:], bytes.Repeat([]byte{0x55}, 16)) })
			},
			check: func(t *testing.T, r *rig, c *fakeCPU, k Kind, err error) {
				wantFPUFault(pf(pfPresent|pfWrite, 0x7000))(t, r, c, k, err)
				if le64(r.ram[0x6ff8:]) != 0 {
					t.Errorf("the first page was written: %#x", le64(r.ram[0x6ff8:]))
				}
			}},
		{name: "pxor xmm0, [rsi] not present: #PF", code: pxorX0RSI,
			setup: func(r *rig, c *fakeCPU) {
				c.pages = map[uint64]uint64{codeAddr: codeAddr}
				c.regs.RSI = 0x6000
			},
			check: wantFPUFault(pf(0, 0x6000))},
		{name: "stmxcsr to a non-canonical address: #GP(0)", code: stmxcsrRSI,
			setup: func(r *rig, c *fakeCPU) { c.regs.RSI = 0x8000_0000_0000_0000 }, check: wantFPUFault(gp0())},
		{name: "ldmxcsr [rsp] not canonical: #SS(0)", code: []byte{0x0f, 0xae, 0x14, 0x24},
			setup: func(r *rig, c *fakeCPU) { c.regs.RSP = 0x8000_0000_0000_0000 }, check: wantFPUFault(ss0())},
	})
}

func TestFPUNotEmulated(t *testing.T) {
	run(t, []emuCase{
		{name: "MMX pxor mm0, mm1", code: []byte{0x0f, 0xef, 0xc1}, check: func(t *testing.T, r *rig, c *fakeCPU, k Kind, err error) {
			wantUnhandled(t, err, "MMX form not emulated", "pxor mmx0, mmx1")
		}},
		{name: "addsd is not emulated", code: []byte{0xf2, 0x0f, 0x58, 0xc1}, check: func(t *testing.T, r *rig, c *fakeCPU, k Kind, err error) {
			wantUnhandled(t, err, "not emulated", "addsd xmm0, xmm1")
		}},
		{name: "KVM_GET_XSAVE fails", code: pxorX0X1, setup: func(r *rig, c *fakeCPU) { c.failXSave = true },
			check: func(t *testing.T, r *rig, c *fakeCPU, k Kind, err error) {
				if err == nil || !bytes.Contains([]byte(err.Error()), []byte("KVM_GET_XSAVE")) || c.regs.RIP != codeAddr {
					t.Errorf("err %v, RIP %#x", err, c.regs.RIP)
				}
			}},
	})
}

func TestFXSAVEFast(t *testing.T) {
	run(t, []emuCase{
		{name: "fxsave64 with EFER.FFXSR at CPL0 leaves the XMM area alone", code: []byte{0x48, 0x0f, 0xae, 0x06},
			setup: func(r *rig, c *fakeCPU) {
				c.sregs.EFER |= eferFFXSR
				c.regs.RSI = 0x6000
				copy(r.ram[0x6000+160:], bytes.Repeat([]byte{0x77}, 256))
				withFX(c, func(fx []byte) { copy(fx[kvm.FXXMM0:], bytes.Repeat([]byte{0x11}, 256)) })
			},
			check: func(t *testing.T, r *rig, c *fakeCPU, k Kind, err error) {
				wantOK(t, k, err, KindX87)
				if !bytes.Equal(r.ram[0x6000+160:0x6000+416], bytes.Repeat([]byte{0x77}, 256)) {
					t.Error("XMM area written")
				}
				if le16(r.ram[0x6000:]) != 0x37f || le32(r.ram[0x6000+24:]) != 0x1f80 {
					t.Error("FCW/MXCSR not saved")
				}
			}},
	})
}

// A kernel_fpu_begin()-to-end() stretch as blake2s_compress_ssse3 runs it,
// on one fake vCPU: the state carries from one instruction to the next
// through KVM_SET_XSAVE/KVM_GET_XSAVE.
func TestFPUSequence(t *testing.T) {
	r := newRig(t)
	c := &fakeCPU{sregs: longMode()}
	c.regs.RSP, c.regs.RSI, c.regs.RDI = 0x6000, 0x6100, 0x6200
	binary.LittleEndian.PutUint32(r.ram[0x6004:], 0x1f80)
	for i := range 32 {
		r.ram[0x6100+i] = byte(i)
	}
	prog := [][]byte{
		ldmxcsrRSP,
		{0xf3, 0x0f, 0x6f, 0x06},       // movdqu xmm0, [rsi]
		{0xf3, 0x0f, 0x6f, 0x4e, 0x10}, // movdqu xmm1, [rsi+16]
		{0x66, 0x0f, 0xfe, 0xc1},       // paddd xmm0, xmm1
		{0x66, 0x0f, 0x70, 0xd0, 0x93}, // pshufd xmm2, xmm0, 0x93
		{0x66, 0x0f, 0xef, 0xc2},       // pxor xmm0, xmm2
		{0x66, 0x0f, 0x72, 0xd0, 0x07}, // psrld xmm0, 7
		{0xf3, 0x0f, 0x7f, 0x07},       // movdqu [rdi], xmm0
		{0x66, 0x0f, 0x7e, 0xc0},       // movd eax, xmm0
		{0x66, 0x0f, 0xef, 0xc0},       // pxor xmm0, xmm0
		{0x66, 0x0f, 0x38, 0x00, 0xca}, // pshufb xmm1, xmm2
		{0x66, 0x0f, 0xd7, 0xc9},       // pmovmskb ecx, xmm1
		{0x0f, 0xae, 0x5c, 0x24, 0x08}, // stmxcsr [rsp+8]
		{0x66, 0x48, 0x0f, 0x6e, 0xdf}, // movq xmm3, rdi
		{0x66, 0x48, 0x0f, 0x7e, 0xda}, // movq rdx, xmm3
		{0xf2, 0x48, 0x0f, 0x2a, 0xe2}, // cvtsi2sd xmm4, rdx
		{0xf2, 0x0f, 0x51, 0xec},       // sqrtsd xmm5, xmm4
		{0x66, 0x0f, 0x74, 0xf6},       // pcmpeqb xmm6, xmm6
		{0x0f, 0x57, 0xff},             // xorps xmm7, xmm7
		{0xf2, 0x0f, 0x10, 0x46, 0x08}, // movsd xmm0, [rsi+8]
		{0x66, 0x0f, 0x6c, 0xc6},       // punpcklqdq xmm0, xmm6
		{0x66, 0x0f, 0x7f, 0x47, 0x10}, // movdqa [rdi+16], xmm0
		{0x66, 0x0f, 0xd4, 0xc0},       // paddq xmm0, xmm0
		{0x0f, 0x28, 0xc8},             // movaps xmm1, xmm0
		{0x66, 0x0f, 0xdb, 0xc9},       // pand xmm1, xmm1
		{0x66, 0x0f, 0xeb, 0xc9},       // por xmm1, xmm1
		{0xdb, 0xe3},                   // fninit
		{0xd9, 0xe8},                   // fld1
		{0xdd, 0x5f, 0x20},             // fstp qword [rdi+32]
		{0xdf, 0xe0},                   // fnstsw ax
		{0x0f, 0x77},                   // emms
	}
	at := uint64(codeAddr)
	for _, b := range prog {
		copy(r.ram[at:], b)
		at += uint64(len(b))
	}
	c.regs.RIP = codeAddr
	r.tables(c)
	for i := range prog {
		if _, err := r.emu.Emulate(c, nil); err != nil {
			t.Fatalf("instruction %d: %v", i, err)
		}
	}
	if c.regs.RIP != at {
		t.Fatalf("RIP %#x, want %#x", c.regs.RIP, at)
	}
	le := binary.LittleEndian
	// xmm0 = paddd of bytes 0..15 and 16..31, then ^= pshufd 0x93 of it, >>7.
	var x0 [4]uint32
	for i := range 4 {
		x0[i] = le.Uint32(r.ram[0x6100+4*i:]) + le.Uint32(r.ram[0x6110+4*i:])
	}
	x2 := [4]uint32{x0[3], x0[0], x0[1], x0[2]}
	for i := range 4 {
		want := (x0[i] ^ x2[i]) >> 7
		if got := le.Uint32(r.ram[0x6200+4*i:]); got != want {
			t.Errorf("stored dword %d = %#x, want %#x", i, got, want)
		}
	}
	if le.Uint64(r.ram[0x6220:]) != 0x3ff0_0000_0000_0000 {
		t.Errorf("fstp of fld1 stored %#x", le.Uint64(r.ram[0x6220:]))
	}
	if le.Uint32(r.ram[0x6008:]) != 0x1f80 || c.regs.RDX != 0x6200 {
		t.Errorf("stmxcsr %#x, rdx %#x", le.Uint32(r.ram[0x6008:]), c.regs.RDX)
	}
	fx := fxOf(c)
	if got, want := le.Uint64(fx[kvm.FXXMM0+5*16:]), math.Float64bits(math.Sqrt(0x6200)); got != want {
		t.Errorf("sqrtsd of cvtsi2sd of 0x6200 = %#x, want %#x", got, want)
	}
	if fx[kvm.FXFTW] != 0 || c.regs.RAX&0xffff != 0 {
		t.Errorf("after emms FTW %#x, fnstsw ax %#x", fx[kvm.FXFTW], c.regs.RAX&0xffff)
	}
	want := "ldmxcsr=1 stmxcsr=1 x87=5 sse=24"
	if got := r.emu.Stats.String(); got != want {
		t.Errorf("stats %q, want %q", got, want)
	}
}
