//go:build linux && amd64

package x86native

import (
	"encoding/binary"
	"strings"
	"testing"

	"golang.org/x/arch/x86/x86asm"
)

// The generated prologue and epilogue say what they are meant to say.
func TestProgramDisassembles(t *testing.T) {
	p := program(0x1122334455667788, []byte{0x90})
	var lines []string
	for len(p) > 0 {
		inst, err := x86asm.Decode(p, 64)
		if err != nil {
			t.Fatalf("cannot decode % x: %v", p[:min(len(p), 15)], err)
		}
		lines = append(lines, x86asm.IntelSyntax(inst, 0, nil))
		p = p[inst.Len:]
	}
	text := strings.Join(lines, "\n")
	for _, want := range []string{"mov rax, 0x1122334455667788", "fxsave64 ptr [rax+0x580]", "fxrstor64 ptr [rax+0x180]",
		"push qword ptr [rax+0x80]", "popfq", "mov r15, qword ptr [rax+0x78]", "nop", "pushfq", "pop qword ptr [rax+0x140]",
		"mov qword ptr [rax+0x138], r15", "fxsave64 ptr [rax+0x380]", "mov rsp, qword ptr [rax+0x88]", "ret"} {
		if !strings.Contains(text, want) {
			t.Errorf("program lacks %q:\n%s", want, text)
		}
	}
}

func TestRun(t *testing.T) {
	var in State
	for i := range in.GPR {
		in.GPR[i] = uint64(i) * 0x0101010101010101
	}
	in.RFLAGS = 0x8d5
	binary.LittleEndian.PutUint16(in.FX[0:], 0x37f)
	binary.LittleEndian.PutUint32(in.FX[24:], 0x1f80)
	for i := range 16 {
		in.FX[160+16*3+i] = byte(i)
	}
	buf := make([]byte, 16)
	in.GPR[6] = uint64(uintptr(unsafePointer(buf)))
	// add rcx, rdx; movdqu [rsi], xmm3; pxor xmm3, xmm3
	out, err := Run([]byte{0x48, 0x01, 0xd1, 0xf3, 0x0f, 0x7f, 0x1e, 0x66, 0x0f, 0xef, 0xdb}, &in)
	if err != nil {
		t.Fatal(err)
	}
	if out.GPR[1] != in.GPR[1]+in.GPR[2] {
		t.Errorf("rcx %#x", out.GPR[1])
	}
	for i := range 16 {
		if buf[i] != byte(i) || out.FX[160+48+i] != 0 {
			t.Fatalf("buf % x, xmm3 % x", buf, out.FX[160+48:160+64])
		}
	}
	if out.RFLAGS&ArithFlags == in.RFLAGS&ArithFlags {
		t.Errorf("flags %#x unchanged by add", out.RFLAGS)
	}
	if binary.LittleEndian.Uint32(out.FX[24:]) != 0x1f80 {
		t.Errorf("MXCSR %#x", binary.LittleEndian.Uint32(out.FX[24:]))
	}
}

// An #MF or #XM comes back as Fault with the state at the fault, and Go
// floating point works afterwards.
func TestRunFault(t *testing.T) {
	le := binary.LittleEndian
	buf := make([]byte, 16)
	le.PutUint64(buf, 0xbff0_0000_0000_0000) // -1.0
	for _, c := range []struct {
		name  string
		code  []byte
		fsw   uint16
		mxcsr uint32
		fault string
	}{
		{"fld1 with an exception pending", []byte{0xd9, 0xe8}, 0xb881, 0x1f80, "#MF"},
		{"sqrtsd of -1, IE unmasked", []byte{0xf2, 0x0f, 0x51, 0x06}, 0, 0x1f00, "#XM"},
		{"sqrtsd of -1, masked", []byte{0xf2, 0x0f, 0x51, 0x06}, 0, 0x1f80, ""},
	} {
		var in State
		le.PutUint16(in.FX[0:], 0x37e)
		le.PutUint16(in.FX[2:], c.fsw)
		le.PutUint32(in.FX[24:], c.mxcsr)
		le.PutUint64(in.FX[160:], 0x1234)
		in.GPR[6] = uint64(uintptr(unsafePointer(buf)))
		for range 3 {
			out, err := Run(c.code, &in)
			if err != nil {
				t.Fatal(err)
			}
			if out.Fault != c.fault {
				t.Errorf("%s: fault %q, want %q", c.name, out.Fault, c.fault)
			}
			xmm0 := le.Uint64(out.FX[160:])
			switch c.fault {
			case "#XM":
				if le.Uint32(out.FX[24:]) != 0x1f01 || xmm0 != 0x1234 {
					t.Errorf("%s: MXCSR %#x XMM0 %#x, want the IE flag and XMM0 unchanged", c.name, le.Uint32(out.FX[24:]), xmm0)
				}
			case "":
				if xmm0 != 0xfff8_0000_0000_0000 {
					t.Errorf("%s: XMM0 %#x, want the default NaN", c.name, xmm0)
				}
			}
			x := 1.0
			for i := range 100 {
				x = x*1.5 + 1e-300/x + float64(i)
			}
			_ = make([]byte, 1<<20) // the garbage collector's float math
			if x <= 0 {
				t.Fatal(x)
			}
		}
	}
}
