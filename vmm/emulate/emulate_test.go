package emulate

import (
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	"godvm/devices/bus"
	"godvm/guestmem"
)

const codeAddr = 0x1000

type emuCase struct {
	name  string
	code  []byte // placed at codeAddr (identity-mapped unless setup says otherwise)
	setup func(r *rig, c *fakeCPU)
	check func(t *testing.T, r *rig, c *fakeCPU, k Kind, err error)
}

func run(t *testing.T, cases []emuCase) {
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t)
			c := &fakeCPU{sregs: longMode()}
			c.regs.RIP = codeAddr
			c.regs.RFLAGS = 0x2
			copy(r.ram[codeAddr:], tc.code)
			if tc.setup != nil {
				tc.setup(r, c)
			}
			r.tables(c)
			k, err := r.emu.Emulate(c, nil)
			tc.check(t, r, c, k, err)
		})
	}
}

func wantOK(t *testing.T, k Kind, err error, want Kind) {
	t.Helper()
	if err != nil {
		t.Fatalf("Emulate: %v", err)
	}
	if k != want {
		t.Fatalf("kind %v, want %v", k, want)
	}
}

func wantRIP(t *testing.T, c *fakeCPU, want uint64) {
	t.Helper()
	if c.regs.RIP != want {
		t.Errorf("RIP %#x, want %#x", c.regs.RIP, want)
	}
}

func wantUnhandled(t *testing.T, err error, parts ...string) *UnhandledError {
	t.Helper()
	var ue *UnhandledError
	if !errors.As(err, &ue) {
		t.Fatalf("error %v (%T), want *UnhandledError", err, err)
	}
	msg := err.Error()
	for _, p := range parts {
		if !strings.Contains(msg, p) {
			t.Errorf("message %q lacks %q", msg, p)
		}
	}
	return ue
}

func TestSimpleInstructions(t *testing.T) {
	run(t, []emuCase{
		{name: "int3", code: []byte{0xcc}, check: func(t *testing.T, r *rig, c *fakeCPU, k Kind, err error) {
			wantOK(t, k, err, KindINT3)
			wantRIP(t, c, codeAddr+1)
			if len(c.injected) != 1 || c.injected[0] != (injection{vector: 3}) {
				t.Errorf("injected %+v, want #BP without error code", c.injected)
			}
		}},
		{name: "int3 with ignored rep prefix", code: []byte{0xf3, 0xcc}, check: func(t *testing.T, r *rig, c *fakeCPU, k Kind, err error) {
			wantOK(t, k, err, KindINT3)
			wantRIP(t, c, codeAddr+2)
		}},
		{name: "int 3 (cd 03) is not int3", code: []byte{0xcd, 0x03}, check: func(t *testing.T, r *rig, c *fakeCPU, k Kind, err error) {
			wantUnhandled(t, err, "int 0x3", "not emulated")
			if len(c.injected) != 0 || c.setRegs != 0 {
				t.Error("state changed on an unhandled instruction")
			}
		}},
		{name: "clac", code: []byte{0x0f, 0x01, 0xca},
			setup: func(r *rig, c *fakeCPU) { c.regs.RFLAGS |= flagAC | flagZF },
			check: func(t *testing.T, r *rig, c *fakeCPU, k Kind, err error) {
				wantOK(t, k, err, KindCLAC)
				wantRIP(t, c, codeAddr+3)
				if c.regs.RFLAGS != 0x2|flagZF {
					t.Errorf("RFLAGS %#x", c.regs.RFLAGS)
				}
			}},
		{name: "stac", code: []byte{0x0f, 0x01, 0xcb}, check: func(t *testing.T, r *rig, c *fakeCPU, k Kind, err error) {
			wantOK(t, k, err, KindSTAC)
			wantRIP(t, c, codeAddr+3)
			if c.regs.RFLAGS != 0x2|flagAC {
				t.Errorf("RFLAGS %#x", c.regs.RFLAGS)
			}
		}},
		{name: "stac at CPL3 raises #UD", code: []byte{0x0f, 0x01, 0xcb},
			setup: func(r *rig, c *fakeCPU) { c.sregs.CS.Selector = 0x33 },
			check: func(t *testing.T, r *rig, c *fakeCPU, k Kind, err error) {
				wantOK(t, k, err, KindFault)
				wantRIP(t, c, codeAddr)
				if len(c.injected) != 1 || c.injected[0].vector != 6 {
					t.Errorf("injected %+v", c.injected)
				}
			}},
		{name: "fwait", code: []byte{0x9b, 0xdb, 0xe3}, check: func(t *testing.T, r *rig, c *fakeCPU, k Kind, err error) {
			wantOK(t, k, err, KindFWAIT)
			wantRIP(t, c, codeAddr+1)
		}},
		{name: "real mode fwait wraps IP", code: nil,
			setup: func(r *rig, c *fakeCPU) {
				c.sregs = prot32(0, 0)
				c.sregs.CR0 = 0
				c.sregs.CS = c.sregs.DS
				c.sregs.CS.Base = 0x1000
				c.regs.RIP = 0xffff
				r.ram[0x1000+0xffff] = 0x9b
			},
			check: func(t *testing.T, r *rig, c *fakeCPU, k Kind, err error) {
				wantOK(t, k, err, KindFWAIT)
				wantRIP(t, c, 0)
			}},
	})
}

func TestPOPCNT(t *testing.T) {
	const allArith = flagCF | flagPF | flagAF | flagZF | flagSF | flagOF
	run(t, []emuCase{
		{name: "popcnt rax, rcx", code: []byte{0xf3, 0x48, 0x0f, 0xb8, 0xc1},
			setup: func(r *rig, c *fakeCPU) { c.regs.RCX = 0xff00ff; c.regs.RFLAGS |= allArith | flagAC },
			check: func(t *testing.T, r *rig, c *fakeCPU, k Kind, err error) {
				wantOK(t, k, err, KindPOPCNT)
				wantRIP(t, c, codeAddr+5)
				if c.regs.RAX != 16 {
					t.Errorf("rax %d", c.regs.RAX)
				}
				if c.regs.RFLAGS != 0x2|flagAC {
					t.Errorf("RFLAGS %#x: arithmetic flags must be cleared, others kept", c.regs.RFLAGS)
				}
			}},
		{name: "popcnt eax, ecx zero source sets ZF and zero-extends", code: []byte{0xf3, 0x0f, 0xb8, 0xc1},
			setup: func(r *rig, c *fakeCPU) {
				c.regs.RAX = 0xdead_beef_0000_0001
				c.regs.RCX = 0xffff_ffff_0000_0000 // upper half is not part of ecx
				c.regs.RFLAGS |= flagCF
			},
			check: func(t *testing.T, r *rig, c *fakeCPU, k Kind, err error) {
				wantOK(t, k, err, KindPOPCNT)
				if c.regs.RAX != 0 || c.regs.RFLAGS != 0x2|flagZF {
					t.Errorf("rax %#x RFLAGS %#x", c.regs.RAX, c.regs.RFLAGS)
				}
			}},
		{name: "popcnt ax, cx keeps the upper bits", code: []byte{0x66, 0xf3, 0x0f, 0xb8, 0xc1},
			setup: func(r *rig, c *fakeCPU) { c.regs.RAX = 0x1234_5678_9abc_def0; c.regs.RCX = 0xffff_0007 },
			check: func(t *testing.T, r *rig, c *fakeCPU, k Kind, err error) {
				wantOK(t, k, err, KindPOPCNT)
				wantRIP(t, c, codeAddr+5)
				if c.regs.RAX != 0x1234_5678_9abc_0003 {
					t.Errorf("rax %#x", c.regs.RAX)
				}
			}},
		{name: "popcnt r9, [rdx+rbx*4+0x10]", code: []byte{0xf3, 0x4c, 0x0f, 0xb8, 0x4c, 0x9a, 0x10},
			setup: func(r *rig, c *fakeCPU) {
				c.regs.RDX, c.regs.RBX = 0x3000, 0x8
				binary.LittleEndian.PutUint64(r.ram[0x3000+0x20+0x10:], 0x8000_0000_0000_0101)
			},
			check: func(t *testing.T, r *rig, c *fakeCPU, k Kind, err error) {
				wantOK(t, k, err, KindPOPCNT)
				wantRIP(t, c, codeAddr+7)
				if c.regs.R9 != 3 {
					t.Errorf("r9 %d", c.regs.R9)
				}
			}},
		{name: "popcnt rax, [rip+0x100]", code: []byte{0xf3, 0x48, 0x0f, 0xb8, 0x05, 0x00, 0x01, 0x00, 0x00},
			setup: func(r *rig, c *fakeCPU) {
				binary.LittleEndian.PutUint64(r.ram[codeAddr+9+0x100:], 0xf)
			},
			check: func(t *testing.T, r *rig, c *fakeCPU, k Kind, err error) {
				wantOK(t, k, err, KindPOPCNT)
				if c.regs.RAX != 4 {
					t.Errorf("rax %d", c.regs.RAX)
				}
			}},
		{name: "popcnt memory source across a page boundary with scattered pages",
			code: []byte{0xf3, 0x48, 0x0f, 0xb8, 0x06}, // popcnt rax, [rsi]
			setup: func(r *rig, c *fakeCPU) {
				// virtual 0x1000 -> physical 0x1000 (code), virtual 0x7000 -> 0x5000,
				// virtual 0x8000 -> 0x9000: the 8 bytes at 0x7ffc come from two pages.
				c.pages = map[uint64]uint64{0x1000: 0x1000, 0x7000: 0x5000, 0x8000: 0x9000}
				c.regs.RSI = 0x7ffc
				copy(r.ram[0x5ffc:], []byte{0xff, 0xff, 0xff, 0xff})
				copy(r.ram[0x9000:], []byte{0x01, 0x00, 0x00, 0x00})
				copy(r.ram[0x8000:], []byte{0xff, 0xff, 0xff, 0xff}) // identity would give the wrong answer
			},
			check: func(t *testing.T, r *rig, c *fakeCPU, k Kind, err error) {
				wantOK(t, k, err, KindPOPCNT)
				if c.regs.RAX != 33 {
					t.Errorf("rax %d, want 33", c.regs.RAX)
				}
			}},
		{name: "popcnt with FS override adds the FS base", code: []byte{0x64, 0xf3, 0x48, 0x0f, 0xb8, 0x06},
			setup: func(r *rig, c *fakeCPU) {
				c.sregs.FS.Base = 0x4000
				c.regs.RSI = 0x10
				binary.LittleEndian.PutUint64(r.ram[0x4010:], 0x3)
			},
			check: func(t *testing.T, r *rig, c *fakeCPU, k Kind, err error) {
				wantOK(t, k, err, KindPOPCNT)
				if c.regs.RAX != 2 {
					t.Errorf("rax %d", c.regs.RAX)
				}
			}},
		{name: "32-bit protected mode popcnt eax, [ebx] uses the DS base", code: []byte{0xf3, 0x0f, 0xb8, 0x03},
			setup: func(r *rig, c *fakeCPU) {
				c.sregs = prot32(0x6000, 0)
				c.regs.RBX = 0x20
				binary.LittleEndian.PutUint32(r.ram[0x6020:], 0x7)
			},
			check: func(t *testing.T, r *rig, c *fakeCPU, k Kind, err error) {
				wantOK(t, k, err, KindPOPCNT)
				if c.regs.RAX != 3 {
					t.Errorf("rax %d", c.regs.RAX)
				}
			}},
		{name: "popcnt source outside RAM", code: []byte{0xf3, 0x48, 0x0f, 0xb8, 0x06},
			setup: func(r *rig, c *fakeCPU) { c.regs.RSI = 0x4000_0000 },
			check: func(t *testing.T, r *rig, c *fakeCPU, k Kind, err error) {
				wantUnhandled(t, err, "popcnt", "0x40000000", "clearcpuid=popcnt")
			}},
	})
}

func TestFetch(t *testing.T) {
	run(t, []emuCase{
		{name: "instruction across a page boundary", code: nil,
			setup: func(r *rig, c *fakeCPU) {
				// popcnt rax, rcx at virtual 0x2ffe: 2 bytes on physical page
				// 0x4000, 3 bytes on physical page 0xa000.
				c.pages = map[uint64]uint64{0x2000: 0x4000, 0x3000: 0xa000}
				c.regs.RIP = 0x2ffe
				c.regs.RCX = 0x7
				copy(r.ram[0x4ffe:], []byte{0xf3, 0x48})
				copy(r.ram[0xa000:], []byte{0x0f, 0xb8, 0xc1})
			},
			check: func(t *testing.T, r *rig, c *fakeCPU, k Kind, err error) {
				wantOK(t, k, err, KindPOPCNT)
				wantRIP(t, c, 0x3003)
				if c.regs.RAX != 3 {
					t.Errorf("rax %d", c.regs.RAX)
				}
			}},
		{name: "short instruction before an unmapped page", code: nil,
			setup: func(r *rig, c *fakeCPU) {
				c.pages = map[uint64]uint64{0x2000: 0x4000}
				c.regs.RIP = 0x2fff
				r.ram[0x4fff] = 0xcc
			},
			check: func(t *testing.T, r *rig, c *fakeCPU, k Kind, err error) {
				wantOK(t, k, err, KindINT3)
			}},
		{name: "RIP not mapped is a #PF on the fetch", code: nil,
			setup: func(r *rig, c *fakeCPU) {
				c.pages = map[uint64]uint64{}
				c.regs.RIP = 0xffffffff81000000
			},
			check: func(t *testing.T, r *rig, c *fakeCPU, k Kind, err error) {
				wantOK(t, k, err, KindFault)
				wantRIP(t, c, 0xffffffff81000000)
				wantInjected(t, c, injection{vector: 14, hasCode: true, code: pfFetch, cr2: 0xffffffff81000000})
			}},
		{name: "RIP outside RAM", code: nil,
			setup: func(r *rig, c *fakeCPU) { c.regs.RIP = 0xfff0_0000 },
			check: func(t *testing.T, r *rig, c *fakeCPU, k Kind, err error) {
				var fe *FetchError
				if !errors.As(err, &fe) {
					t.Fatalf("err %v", err)
				}
				if _, ok := guestmem.IsAccessError(err); !ok {
					t.Errorf("%v does not wrap the guestmem AccessError", err)
				}
			}},
		{name: "truncated instruction at the end of RAM", code: nil,
			setup: func(r *rig, c *fakeCPU) {
				c.regs.RIP = ramSize - 2
				copy(r.ram[ramSize-2:], []byte{0xf3, 0x48})
			},
			check: func(t *testing.T, r *rig, c *fakeCPU, k Kind, err error) {
				wantUnhandled(t, err, "f3 48", "cannot decode")
			}},
	})
}

func TestFetchFailureUsesKVMBytes(t *testing.T) {
	r := newRig(t)
	c := &fakeCPU{sregs: longMode(), pages: map[uint64]uint64{}}
	c.regs.RIP = 0x5000
	r.tables(c)
	k, err := r.emu.Emulate(c, []byte{0x9b})
	wantOK(t, k, err, KindFWAIT)
	wantRIP(t, c, 0x5001)
}

func TestPartialFetchCompletedByKVMBytes(t *testing.T) {
	// popcnt rax, rcx at the end of RAM: only 2 bytes are readable, KVM
	// reported all 5.
	r := newRig(t)
	c := &fakeCPU{sregs: longMode()}
	c.regs.RIP = ramSize - 2
	c.regs.RCX = 1
	r.tables(c)
	copy(r.ram[ramSize-2:], []byte{0xf3, 0x48})
	k, err := r.emu.Emulate(c, []byte{0xf3, 0x48, 0x0f, 0xb8, 0xc1})
	wantOK(t, k, err, KindPOPCNT)
	if c.regs.RAX != 1 {
		t.Errorf("rax %d", c.regs.RAX)
	}
	// KVM bytes that disagree with guest memory are not used.
	c.regs.RIP = ramSize - 2
	if _, err := r.emu.Emulate(c, []byte{0x9b}); err == nil {
		t.Error("mismatching KVM bytes used")
	}
}

func TestRegsErrorIsReported(t *testing.T) {
	r := newRig(t)
	c := &fakeCPU{failRegs: true}
	if _, err := r.emu.Emulate(c, nil); err == nil || !strings.Contains(err.Error(), "KVM_GET_REGS") {
		t.Errorf("err %v", err)
	}
}

func TestUnhandled(t *testing.T) {
	run(t, []emuCase{
		{name: "xrstor", code: []byte{0x48, 0x0f, 0xae, 0x2f}, check: func(t *testing.T, r *rig, c *fakeCPU, k Kind, err error) {
			ue := wantUnhandled(t, err, "RIP 0x1000", "48 0f ae 2f", "xrstor64", "noxsave")
			if ue.RIP != codeAddr || ue.Hint != "boot the guest with noxsave" || string(ue.Bytes) != "\x48\x0f\xae\x2f" {
				t.Errorf("%+v", ue)
			}
			if k != KindNone || c.setRegs != 0 {
				t.Error("state changed")
			}
		}},
		{name: "cmpxchg16b", code: []byte{0xf0, 0x48, 0x0f, 0xc7, 0x0f}, check: func(t *testing.T, r *rig, c *fakeCPU, k Kind, err error) {
			wantUnhandled(t, err, "cmpxchg16b", "clearcpuid=cx16")
		}},
		{name: "rdrand", code: []byte{0x0f, 0xc7, 0xf0}, check: func(t *testing.T, r *rig, c *fakeCPU, k Kind, err error) {
			wantUnhandled(t, err, "rdrand eax", "nordrand")
		}},
		{name: "unknown to x86asm", code: []byte{0x0f, 0x38, 0xf9, 0x02}, check: func(t *testing.T, r *rig, c *fakeCPU, k Kind, err error) {
			wantUnhandled(t, err, "0f 38 f9 02", "x86asm cannot decode", "not emulated by godvm")
		}},
	})
}

func TestStats(t *testing.T) {
	r := newRig(t)
	for _, code := range [][]byte{{0xcc}, {0x0f, 0x01, 0xca}, {0x0f, 0x01, 0xca}, {0x48, 0x0f, 0xae, 0x2f}} {
		c := &fakeCPU{sregs: longMode()}
		c.regs.RIP = codeAddr
		copy(r.ram[codeAddr:], code)
		r.tables(c)
		r.emu.Emulate(c, nil)
	}
	s := &r.emu.Stats
	if s.Count(KindINT3) != 1 || s.Count(KindCLAC) != 2 || s.Failed() != 1 || s.Count(KindPOPCNT) != 0 {
		t.Errorf("counts: %s", s)
	}
	if got := s.String(); got != "int3=1 clac=2 failed=1" {
		t.Errorf("String() = %q", got)
	}
	snap := s.Snapshot()
	if len(snap) != 3 || snap["clac"] != 2 || snap["failed"] != 1 {
		t.Errorf("Snapshot() = %v", snap)
	}
	var z Stats
	if z.String() != "none" || z.Count(Kind(99)) != 0 {
		t.Error("zero Stats")
	}
	if KindMOVDIR64B.String() != "movdir64b" || Kind(42).String() != "Kind(42)" {
		t.Error("Kind.String")
	}
}

// wideSource fills 64 bytes at gpa with 0x10, 0x11, ...
func wideSource(r *rig, gpa uint64) [64]byte {
	var d [64]byte
	for i := range d {
		d[i] = byte(0x10 + i)
	}
	copy(r.ram[gpa:], d[:])
	return d
}

func TestWideWrites(t *testing.T) {
	const allArith = flagCF | flagPF | flagAF | flagZF | flagSF | flagOF
	run(t, []emuCase{
		{name: "movdir64b rax, [rdx]", code: []byte{0x66, 0x0f, 0x38, 0xf8, 0x02},
			setup: func(r *rig, c *fakeCPU) {
				c.regs.RAX, c.regs.RDX = portalBase+0x40, 0x3000
				c.regs.RFLAGS |= flagCF
				wideSource(r, 0x3000)
			},
			check: func(t *testing.T, r *rig, c *fakeCPU, k Kind, err error) {
				wantOK(t, k, err, KindMOVDIR64B)
				wantRIP(t, c, codeAddr+5)
				want := wideSource(r, 0x3000)
				if len(r.portal.writes) != 1 || r.portal.writes[0] != (wideWrite{0x40, want, bus.MOVDIR64B}) {
					t.Errorf("portal got %+v", r.portal.writes)
				}
				if c.regs.RFLAGS != 0x2|flagCF {
					t.Errorf("MOVDIR64B changed flags: %#x", c.regs.RFLAGS)
				}
			}},
		{name: "movdir64b with 67: 32-bit address registers", code: []byte{0x67, 0x66, 0x0f, 0x38, 0xf8, 0x44, 0x24, 0x08},
			setup: func(r *rig, c *fakeCPU) {
				c.regs.RAX = 0xffff_ffff_0000_0000 | portalBase // upper half ignored
				c.regs.RSP = 0xffff_ffff_0000_3000
				wideSource(r, 0x3008)
			},
			check: func(t *testing.T, r *rig, c *fakeCPU, k Kind, err error) {
				wantOK(t, k, err, KindMOVDIR64B)
				wantRIP(t, c, codeAddr+8)
				if len(r.portal.writes) != 1 || r.portal.writes[0].off != 0 || r.portal.writes[0].data[0] != 0x10 {
					t.Errorf("portal got %+v", r.portal.writes)
				}
			}},
		{name: "movdir64b r9, [r10+rcx*8+0x100] with REX", code: []byte{0x66, 0x45, 0x0f, 0x38, 0xf8, 0x8c, 0xca, 0x00, 0x01, 0x00, 0x00},
			setup: func(r *rig, c *fakeCPU) {
				c.regs.R9, c.regs.R10, c.regs.RCX = portalBase+0x80, 0x2000, 0x2
				wideSource(r, 0x2000+0x10+0x100)
			},
			check: func(t *testing.T, r *rig, c *fakeCPU, k Kind, err error) {
				wantOK(t, k, err, KindMOVDIR64B)
				wantRIP(t, c, codeAddr+11)
				if len(r.portal.writes) != 1 || r.portal.writes[0].off != 0x80 {
					t.Errorf("portal got %+v", r.portal.writes)
				}
			}},
		{name: "enqcmds accepted clears ZF and all arithmetic flags", code: []byte{0xf3, 0x0f, 0x38, 0xf8, 0x02},
			setup: func(r *rig, c *fakeCPU) {
				c.regs.RAX, c.regs.RDX = portalBase, 0x3000
				c.regs.RFLAGS |= allArith
				wideSource(r, 0x3000)
				binary.LittleEndian.PutUint32(r.ram[0x3000:], 0xfff0_0005) // priv, junk in 30:20, PASID 5
			},
			check: func(t *testing.T, r *rig, c *fakeCPU, k Kind, err error) {
				wantOK(t, k, err, KindENQCMDS)
				wantRIP(t, c, codeAddr+5)
				if c.regs.RFLAGS != 0x2 {
					t.Errorf("RFLAGS %#x", c.regs.RFLAGS)
				}
				w := r.portal.writes[0]
				if w.kind != bus.ENQCMDS || binary.LittleEndian.Uint32(w.data[:]) != 0x8000_0005 || w.data[4] != 0x14 {
					t.Errorf("portal got %+v", w)
				}
			}},
		{name: "enqcmds retry sets ZF", code: []byte{0xf3, 0x0f, 0x38, 0xf8, 0x02},
			setup: func(r *rig, c *fakeCPU) {
				r.portal.accept = false
				c.regs.RAX, c.regs.RDX = portalBase, 0x3000
				c.regs.RFLAGS |= flagCF | flagOF
			},
			check: func(t *testing.T, r *rig, c *fakeCPU, k Kind, err error) {
				wantOK(t, k, err, KindENQCMDS)
				if c.regs.RFLAGS != 0x2|flagZF {
					t.Errorf("RFLAGS %#x", c.regs.RFLAGS)
				}
			}},
		{name: "enqcmds at CPL3 is #GP", code: []byte{0xf3, 0x0f, 0x38, 0xf8, 0x02},
			setup: func(r *rig, c *fakeCPU) { c.sregs.CS.Selector = 0x33; c.regs.RAX = portalBase },
			check: func(t *testing.T, r *rig, c *fakeCPU, k Kind, err error) {
				wantOK(t, k, err, KindFault)
				wantRIP(t, c, codeAddr)
				if len(c.injected) != 1 || c.injected[0] != (injection{vector: 13, hasCode: true}) || len(r.portal.writes) != 0 {
					t.Errorf("injected %+v writes %d", c.injected, len(r.portal.writes))
				}
			}},
		{name: "enqcmd takes the PASID from IA32_PASID", code: []byte{0xf2, 0x0f, 0x38, 0xf8, 0x02},
			setup: func(r *rig, c *fakeCPU) {
				c.msrs = map[uint32]uint64{0xd93: 0x8000_0042}
				c.regs.RAX, c.regs.RDX = portalBase, 0x3000
				wideSource(r, 0x3000)
				binary.LittleEndian.PutUint32(r.ram[0x3000:], 0x8000_0007)
			},
			check: func(t *testing.T, r *rig, c *fakeCPU, k Kind, err error) {
				wantOK(t, k, err, KindENQCMD)
				w := r.portal.writes[0]
				if w.kind != bus.ENQCMD || binary.LittleEndian.Uint32(w.data[:]) != 0x42 {
					t.Errorf("portal got %+v", w)
				}
			}},
		{name: "enqcmd without a valid PASID is #GP", code: []byte{0xf2, 0x0f, 0x38, 0xf8, 0x02},
			setup: func(r *rig, c *fakeCPU) {
				c.msrs = map[uint32]uint64{0xd93: 0x42}
				c.regs.RAX, c.regs.RDX = portalBase, 0x3000
			},
			check: func(t *testing.T, r *rig, c *fakeCPU, k Kind, err error) {
				wantOK(t, k, err, KindFault)
				if len(c.injected) != 1 || c.injected[0].vector != 13 {
					t.Errorf("injected %+v", c.injected)
				}
			}},
		{name: "misaligned destination is #GP", code: []byte{0x66, 0x0f, 0x38, 0xf8, 0x02},
			setup: func(r *rig, c *fakeCPU) { c.regs.RAX, c.regs.RDX = portalBase+8, 0x3000 },
			check: func(t *testing.T, r *rig, c *fakeCPU, k Kind, err error) {
				wantOK(t, k, err, KindFault)
				wantRIP(t, c, codeAddr)
				if len(r.portal.writes) != 0 {
					t.Error("write delivered")
				}
			}},
		{name: "destination with no device", code: []byte{0x66, 0x0f, 0x38, 0xf8, 0x02},
			setup: func(r *rig, c *fakeCPU) { c.regs.RAX, c.regs.RDX = 0xe000_0000, 0x3000 },
			check: func(t *testing.T, r *rig, c *fakeCPU, k Kind, err error) {
				ue := wantUnhandled(t, err, "MOVDIR64B to guest-physical 0xe0000000: no device there", "movdir64b rax, zmmword ptr [rdx]")
				if !strings.Contains(ue.Hint, "DSA portal") {
					t.Errorf("hint %q", ue.Hint)
				}
				if c.setRegs != 0 {
					t.Error("registers written")
				}
			}},
		{name: "enqcmds to RAM has no device", code: []byte{0xf3, 0x0f, 0x38, 0xf8, 0x02},
			setup: func(r *rig, c *fakeCPU) { c.regs.RAX, c.regs.RDX = 0x8000, 0x3000 },
			check: func(t *testing.T, r *rig, c *fakeCPU, k Kind, err error) {
				wantUnhandled(t, err, "ENQCMDS to guest-physical 0x8000: no device there")
			}},
		{name: "movdir64b to RAM stores there", code: []byte{0x66, 0x0f, 0x38, 0xf8, 0x02},
			setup: func(r *rig, c *fakeCPU) {
				c.regs.RAX, c.regs.RDX = 0x8000, 0x3000
				wideSource(r, 0x3000)
			},
			check: func(t *testing.T, r *rig, c *fakeCPU, k Kind, err error) {
				wantOK(t, k, err, KindMOVDIR64B)
				if r.ram[0x8000] != 0x10 || r.ram[0x803f] != 0x10+63 {
					t.Errorf("RAM % x", r.ram[0x8000:0x8040])
				}
			}},
		{name: "movdir64b to a plain device gets a 64-byte Write", code: []byte{0x66, 0x0f, 0x38, 0xf8, 0x02},
			setup: func(r *rig, c *fakeCPU) {
				c.regs.RAX, c.regs.RDX = plainBase+0x40, 0x3000
				wideSource(r, 0x3000)
			},
			check: func(t *testing.T, r *rig, c *fakeCPU, k Kind, err error) {
				wantOK(t, k, err, KindMOVDIR64B)
				if len(r.plain.plain) != 1 || len(r.plain.plain[0]) != 64 {
					t.Errorf("plain writes %v", r.plain.plain)
				}
			}},
		{name: "source outside guest RAM", code: []byte{0x66, 0x0f, 0x38, 0xf8, 0x02},
			setup: func(r *rig, c *fakeCPU) { c.regs.RAX, c.regs.RDX = portalBase, 0x1_0000_0000 },
			check: func(t *testing.T, r *rig, c *fakeCPU, k Kind, err error) {
				wantUnhandled(t, err, "reading the 64-byte source at linear 0x100000000", "outside guest memory")
				if len(r.portal.writes) != 0 {
					t.Error("write delivered")
				}
			}},
		{name: "source across a page boundary", code: []byte{0x66, 0x0f, 0x38, 0xf8, 0x02},
			setup: func(r *rig, c *fakeCPU) {
				c.pages = map[uint64]uint64{0x1000: 0x1000, portalBase: portalBase, 0x7000: 0x5000, 0x8000: 0x9000}
				c.regs.RAX, c.regs.RDX = portalBase, 0x7fe0
				for i := 0; i < 32; i++ {
					r.ram[0x5fe0+i] = 0xaa
					r.ram[0x9000+i] = 0xbb
				}
			},
			check: func(t *testing.T, r *rig, c *fakeCPU, k Kind, err error) {
				wantOK(t, k, err, KindMOVDIR64B)
				d := r.portal.writes[0].data
				if d[0] != 0xaa || d[31] != 0xaa || d[32] != 0xbb || d[63] != 0xbb {
					t.Errorf("data % x", d)
				}
			}},
		{name: "32-bit mode movdir64b uses the ES base for the destination", code: []byte{0x66, 0x0f, 0x38, 0xf8, 0x02},
			setup: func(r *rig, c *fakeCPU) {
				c.sregs = prot32(0x1000, 0x1000_0000)
				c.regs.RAX, c.regs.RDX = portalBase-0x1000_0000+0xc0, 0x2000
				wideSource(r, 0x3000)
			},
			check: func(t *testing.T, r *rig, c *fakeCPU, k Kind, err error) {
				wantOK(t, k, err, KindMOVDIR64B)
				if len(r.portal.writes) != 1 || r.portal.writes[0].off != 0xc0 || r.portal.writes[0].data[0] != 0x10 {
					t.Errorf("portal got %+v", r.portal.writes)
				}
			}},
		{name: "0f 38 f8 without a mandatory prefix", code: []byte{0x0f, 0x38, 0xf8, 0x02},
			check: func(t *testing.T, r *rig, c *fakeCPU, k Kind, err error) {
				wantUnhandled(t, err, "without a 66/f2/f3 prefix")
			}},
	})
}

func TestDisasmNames(t *testing.T) {
	cases := map[string][]byte{
		"movdir64b rax, zmmword ptr [rdx]":          {0x66, 0x0f, 0x38, 0xf8, 0x02},
		"enqcmd eax, zmmword ptr [esp+0x8]":         {0x67, 0xf2, 0x0f, 0x38, 0xf8, 0x44, 0x24, 0x08},
		"enqcmds r9, zmmword ptr [r10+8*rcx+0x100]": {0xf3, 0x45, 0x0f, 0x38, 0xf8, 0x8c, 0xca, 0x00, 0x01, 0x00, 0x00},
		"clac":            {0x0f, 0x01, 0xca},
		"stac":            {0x0f, 0x01, 0xcb},
		"popcnt rax, rcx": {0xf3, 0x48, 0x0f, 0xb8, 0xc1},
	}
	for want, b := range cases {
		if got, _ := disasm(b, 64, 0); got != want {
			t.Errorf("disasm(% x) = %q, want %q", b, got, want)
		}
	}
}
