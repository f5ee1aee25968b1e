package emulate

import (
	"encoding/binary"
	"fmt"
	"log/slog"

	"godvm/devices/bus"
)

// The paravirtual 64-byte store: the protocol is in the package doc. This
// file is its host side; vmm/exits.go sends every access to the port here.

// PVStatus is the port's answer: the data of the guest's 4-byte IN, which
// KVM loads into EAX.
type PVStatus uint32

// Port answers. The guest kernel turns anything >= PVBadRequest into an
// oops, as the real instruction's #GP would be.
const (
	PVStored     PVStatus = 0 // stored (MOVDIR64B) or accepted (ENQCMDS)
	PVRetry      PVStatus = 1 // ENQCMDS only: the device did not accept it (ZF=1)
	PVBadRequest PVStatus = 2 // unknown kind, or not a 4-byte IN
	PVUnaligned  PVStatus = 3 // destination not 64-byte aligned
	PVNotPortal  PVStatus = 4 // destination takes no 64-byte stores: nothing written
	PVBadSource  PVStatus = 5 // source not all guest RAM, or crossing a 4 KiB page
	numPVStatus           = 6
)

var pvStatusNames = [numPVStatus]string{"stored", "retry", "bad request", "destination not 64-byte aligned",
	"destination is not a portal", "source not in guest RAM or crossing a 4 KiB page"}

func (s PVStatus) String() string {
	if s < numPVStatus {
		return pvStatusNames[s]
	}
	return fmt.Sprintf("PVStatus(%d)", uint32(s))
}

// Request kinds (EAX on entry).
const (
	PVKindMOVDIR64B = 1
	PVKindENQCMDS   = 2
)

// pvRequest is one decoded request, for the refusal report.
type pvRequest struct {
	rip, kind, src, dst uint64
}

// PV64B serves one guest access to the paravirtual 64-byte store port
// (layout.PortPV64B). in and size are the access's direction and width;
// data is its KVM_EXIT_IO data buffer (size bytes per access). For an IN,
// every access's data is filled with the status (low bytes first), which
// KVM loads into the guest's register when the vCPU runs again: no
// KVM_SET_REGS. A request is a single 4-byte IN; anything else is answered
// PVBadRequest. The error is non-nil only when the vCPU's registers cannot
// be read (a VMM failure, not the guest's).
func (e *Emulator) PV64B(cpu VCPU, in bool, size int, data []byte) (PVStatus, error) {
	status, req, kind, err := e.pv64b(cpu, in, size, data)
	if err != nil {
		return 0, err
	}
	if in && size > 0 {
		var le [4]byte
		binary.LittleEndian.PutUint32(le[:], uint32(status))
		for off := 0; off+size <= len(data); off += size {
			for i := range size {
				data[off+i] = 0
				if i < 4 {
					data[off+i] = le[i]
				}
			}
		}
	}
	e.Stats.addPV(kind, status)
	if status >= PVBadRequest {
		e.warnPV(status, in, size, len(data), req)
	}
	return status, nil
}

// pv64b checks the request and delivers it. kind is the bus kind of a
// request that reached the device (-1 otherwise).
func (e *Emulator) pv64b(cpu VCPU, in bool, size int, data []byte) (PVStatus, pvRequest, bus.WideKind, error) {
	var req pvRequest
	if !in || size != 4 || len(data) != 4 {
		return PVBadRequest, req, -1, nil
	}
	regs, err := cpu.Regs()
	if err != nil {
		return 0, req, -1, fmt.Errorf("emulate: paravirtual store: %w", err)
	}
	req = pvRequest{rip: regs.RIP, kind: uint64(uint32(regs.RAX)), src: regs.RSI, dst: regs.RDI}
	var kind bus.WideKind
	switch req.kind {
	case PVKindMOVDIR64B:
		kind = bus.MOVDIR64B
	case PVKindENQCMDS:
		kind = bus.ENQCMDS
		// ENQCMDS is a supervisor instruction (#GP at CPL > 0); an IN
		// reaches the VMM at CPL3 only with IOPL 3.
		sregs, err := cpu.Sregs()
		if err != nil {
			return 0, req, -1, fmt.Errorf("emulate: paravirtual store: %w", err)
		}
		if (&state{sregs: sregs, mode: cpuMode(&sregs)}).cpl() != 0 {
			return PVBadRequest, req, -1, nil
		}
	default:
		return PVBadRequest, req, -1, nil
	}
	if req.dst%64 != 0 {
		return PVUnaligned, req, -1, nil
	}
	// Only a device that takes 64-byte stores itself (a portal): not RAM,
	// not a hole, not a register BAR that would get a plain 64-byte write.
	if e.MMIO == nil || !e.MMIO.Wide64At(req.dst) {
		return PVNotPortal, req, -1, nil
	}
	if req.src%pageSize > pageSize-64 {
		return PVBadSource, req, -1, nil
	}
	var buf [64]byte
	if err := e.Mem.ReadAt(buf[:], req.src); err != nil {
		return PVBadSource, req, -1, nil
	}
	if kind == bus.ENQCMDS {
		maskENQCMDS(&buf)
	}
	found, accepted := e.store64B(req.dst, &buf, kind)
	switch {
	case !found:
		return PVNotPortal, req, -1, nil // unmapped since the check (a BAR move)
	case kind == bus.ENQCMDS && !accepted:
		return PVRetry, req, kind, nil
	}
	return PVStored, req, kind, nil
}

// warnPV logs the first refusal of each status; later ones are only
// counted (Stats: pv-refused), since a guest that gets one oopses.
func (e *Emulator) warnPV(s PVStatus, in bool, size, n int, req pvRequest) {
	if s >= numPVStatus || e.pvWarned[s].Swap(true) {
		return
	}
	log := e.Log
	if log == nil {
		log = slog.Default()
	}
	dir := "out"
	if in {
		dir = "in"
	}
	log.Warn("paravirtual 64-byte store refused (the guest kernel oopses; later refusals of this kind are only counted)",
		"status", uint32(s), "why", s.String(), "access", fmt.Sprintf("%s %d of %d bytes", dir, size, n),
		"rip", fmt.Sprintf("%#x", req.rip), "kind", req.kind,
		"src", fmt.Sprintf("%#x", req.src), "dst", fmt.Sprintf("%#x", req.dst))
}
