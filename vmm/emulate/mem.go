package emulate

import (
	"fmt"

	"golang.org/x/arch/x86/x86asm"
)

// Data accesses of the x87 and SSE instructions: operands up to 512 bytes
// (FXSAVE), each page translated by the guest walk (walk.go), in guest RAM
// or on the MMIO bus (in 8-byte pieces, as KVM splits wide MMIO). A store
// translates every page it touches before it writes any, so a #PF on its
// second page leaves the first untouched, as on the CPU.

// memArg is a memory operand: its linear address, the effective address
// (the offset in its segment, what FDP records) and the segment.
type memArg struct {
	lin uint64
	ea  uint64
	seg x86asm.Reg
}

// memOperand computes a memory operand of n bytes and checks that it is
// canonical (#GP(0), #SS(0) for an SS reference).
func (st *state) memOperand(inst *x86asm.Inst, m x86asm.Mem, n int) (memArg, error) {
	nextRIP := st.regs.RIP + uint64(inst.Len)
	lin, seg, err := st.memLinear(m, inst.AddrSize, nextRIP)
	if err != nil {
		return memArg{}, st.unhandled(err.Error(), "")
	}
	if err := st.checkCanonical(seg, lin, n); err != nil {
		return memArg{}, err
	}
	ea := (lin - st.segLinear(seg, 0)) & widthMask(inst.AddrSize)
	return memArg{lin: lin, ea: ea, seg: seg}, nil
}

// alignFault is the #GP(0) of a misaligned operand that must be aligned.
func alignFault(what string, lin uint64, align uint64) error {
	return gpFault(fmt.Sprintf("%s operand at linear %#x not %d-byte aligned", what, lin, align))
}

// readData reads n bytes at a linear address for an instruction's data
// access: guest faults as *guestFault, anything else as an unhandled
// report.
func (e *Emulator) readData(st *state, lin uint64, n int) ([]byte, error) {
	out := make([]byte, 0, n)
	for len(out) < n {
		va := st.wrapLinear(lin + uint64(len(out)))
		chunk := min(n-len(out), int(pageSize-va%pageSize))
		gpa, err := e.translate(st, va, access{})
		if err != nil {
			if gf, ok := err.(*guestFault); ok {
				return nil, gf
			}
			return nil, st.unhandled(fmt.Sprintf("reading %d bytes at linear %#x: %v", n, lin, err), "")
		}
		buf := make([]byte, chunk)
		if err := e.physRead(gpa, buf); err != nil {
			return nil, st.unhandled(fmt.Sprintf("reading %d bytes at linear %#x: %v", n, lin, err), "")
		}
		out = append(out, buf...)
	}
	return out, nil
}

// writeData stores data at a linear address: every page is translated
// (for a write) first, then written.
func (e *Emulator) writeData(st *state, lin uint64, data []byte) error {
	type piece struct {
		gpa uint64
		b   []byte
	}
	var pieces []piece
	for done := 0; done < len(data); {
		va := st.wrapLinear(lin + uint64(done))
		chunk := min(len(data)-done, int(pageSize-va%pageSize))
		gpa, err := e.translate(st, va, access{write: true})
		if err != nil {
			if gf, ok := err.(*guestFault); ok {
				return gf
			}
			return st.unhandled(fmt.Sprintf("writing %d bytes at linear %#x: %v", len(data), lin, err), "")
		}
		pieces = append(pieces, piece{gpa, data[done : done+chunk]})
		done += chunk
	}
	for _, p := range pieces {
		if err := e.physWrite(p.gpa, p.b); err != nil {
			return st.unhandled(fmt.Sprintf("writing %d bytes at linear %#x: %v", len(data), lin, err), "")
		}
	}
	return nil
}

// physRead reads guest RAM or, where there is none, an MMIO device.
func (e *Emulator) physRead(gpa uint64, b []byte) error {
	if e.Mem.Contains(gpa, uint64(len(b))) {
		return e.Mem.ReadAt(b, gpa)
	}
	for off := 0; off < len(b); off += 8 {
		p := b[off:min(off+8, len(b))]
		if e.MMIO == nil || !e.MMIO.Read(gpa+uint64(off), p) {
			return fmt.Errorf("guest-physical %#x is neither RAM nor a device", gpa+uint64(off))
		}
	}
	return nil
}

// physWrite writes guest RAM or an MMIO device.
func (e *Emulator) physWrite(gpa uint64, b []byte) error {
	if e.Mem.Contains(gpa, uint64(len(b))) {
		return e.Mem.WriteAt(b, gpa)
	}
	for off := 0; off < len(b); off += 8 {
		p := b[off:min(off+8, len(b))]
		if e.MMIO == nil || !e.MMIO.Write(gpa+uint64(off), p) {
			return fmt.Errorf("guest-physical %#x is neither RAM nor a device", gpa+uint64(off))
		}
	}
	return nil
}

// opcodeAt is the index of the first opcode byte in b: after the legacy
// prefixes and, in 64-bit mode, a REX prefix.
func opcodeAt(b []byte, mode int) int {
	i := 0
	for i < len(b) && isLegacyPrefix(b[i]) {
		i++
	}
	if mode == 64 && i < len(b) && b[i]&0xf0 == 0x40 {
		i++
	}
	return i
}
