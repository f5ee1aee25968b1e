package vmm

// The exit dispatch: every KVM_RUN exit a vCPU thread sees goes through
// handleExit.
//
//	IO              -> port 0xf6: the paravirtual 64-byte store (vmm/emulate PV64B);
//	                   else the PIO bus (unknown ports read 0xff, writes are dropped; counted)
//	MMIO            -> MMIO bus (same for unmapped addresses)
//	INTERNAL_ERROR  -> vmm/emulate for emulation failures, else a report
//	SYSTEM_EVENT    -> poweroff / reset / panic
//	SHUTDOWN        -> triple fault: report and stop (exit status 1)
//	FAIL_ENTRY      -> report and stop (exit status 1)
//	HLT, IRQ window, INTR, DEBUG, IOAPIC EOI -> nothing to do, run again
//	anything else   -> report and stop

import (
	"errors"
	"fmt"

	"godvm/kvm"
	"godvm/vmm/emulate"
	"godvm/vmm/layout"
	"godvm/vmm/legacy"
)

// GuestError is a guest-caused stop the VMM cannot continue from (triple
// fault, failed VM entry, an instruction nobody can emulate, an unhandled
// exit). It names the vCPU and where it was.
type GuestError struct {
	VCPU   int
	RIP    uint64
	Symbol string
	What   string
}

func (e *GuestError) Error() string {
	where := fmt.Sprintf("vCPU %d at RIP %#x", e.VCPU, e.RIP)
	if e.Symbol != "" {
		where += " (" + e.Symbol + ")"
	}
	return fmt.Sprintf("%s: %s", where, e.What)
}

func (m *Machine) guestError(v *vcpu, format string, a ...any) error {
	v.capture()
	e := &GuestError{VCPU: v.id, RIP: v.rip, What: fmt.Sprintf(format, a...)}
	if s, ok := m.syms.Lookup(v.rip); ok {
		e.Symbol = s
	}
	return e
}

func (m *Machine) handleExit(v *vcpu, run *kvm.Run, reason kvm.ExitReason) error {
	switch reason {
	case kvm.ExitIO:
		return m.handleIO(v, run)
	case kvm.ExitMMIO:
		mm := run.MMIO()
		data := run.MMIOData()
		if mm.IsWrite != 0 {
			if !m.mmio.Write(mm.PhysAddr, data) {
				m.stats.unknownMMIO(mm.PhysAddr, true)
			}
		} else if !m.mmio.Read(mm.PhysAddr, data) {
			for i := range data {
				data[i] = 0xff
			}
			m.stats.unknownMMIO(mm.PhysAddr, false)
		}
		return nil
	case kvm.ExitInternalError:
		ie := run.InternalError()
		if ie.Suberror != kvm.InternalErrorEmulation {
			return m.guestError(v, "KVM internal error, suberror %d, data %#x", ie.Suberror, ie.Data)
		}
		if _, err := m.emu.Emulate(v.cpu, ie.InsnBytes); err != nil {
			var ue *emulate.UnhandledError
			if errors.As(err, &ue) {
				return m.guestError(v, "%v", ue)
			}
			return m.guestError(v, "instruction emulation failed: %v", err)
		}
		return nil
	case kvm.ExitSystemEvent:
		ev := run.SystemEvent()
		switch ev.Type {
		case kvm.SystemEventShutdown:
			m.guestStop(legacy.StopPowerOff, 0)
		case kvm.SystemEventReset:
			m.guestStop(legacy.StopReset, 0)
		case kvm.SystemEventCrash:
			m.guestStop(legacy.StopPanic, 0)
		default:
			return m.guestError(v, "unknown KVM system event %d", ev.Type)
		}
		return nil
	case kvm.ExitShutdown:
		return m.guestError(v, "the guest triple-faulted (KVM_EXIT_SHUTDOWN): an exception could not be delivered; "+
			"with a System.map (--system-map) the RIP names the function, and --verbose shows the command line")
	case kvm.ExitFailEntry:
		hw, cpu := run.FailEntry()
		return m.guestError(v, "KVM could not enter the guest (KVM_EXIT_FAIL_ENTRY, hardware reason %#x, host CPU %d): "+
			"the vCPU state is invalid for this host", hw, cpu)
	case kvm.ExitHLT, kvm.ExitIRQWindowOpen, kvm.ExitIntr, kvm.ExitDebug, kvm.ExitIOAPICEOI:
		return nil
	}
	return m.guestError(v, "unhandled exit %v", reason)
}

func (m *Machine) handleIO(v *vcpu, run *kvm.Run) error {
	io := run.IO()
	data, err := run.IOData()
	if err != nil {
		return m.guestError(v, "%v", err)
	}
	size := int(io.Size)
	if size == 0 {
		return nil
	}
	if io.Port == layout.PortPV64B {
		// Before the bus: the answer needs the vCPU's registers.
		if _, err := m.emu.PV64B(v.cpu, io.Direction == kvm.IODirIn, size, data); err != nil {
			return m.guestError(v, "%v", err)
		}
		return nil
	}
	port := uint64(io.Port)
	for off := 0; off+size <= len(data); off += size {
		chunk := data[off : off+size]
		if io.Direction == kvm.IODirOut {
			if !m.pioAccess(port, chunk, true) {
				m.stats.unknownPort(io.Port, true)
			}
		} else if !m.pioAccess(port, chunk, false) {
			for i := range chunk {
				chunk[i] = 0xff
			}
			m.stats.unknownPort(io.Port, false)
		}
	}
	return nil
}

// pioAccess dispatches a port access. An access wider than the device at
// its first port goes to that device whole (an outl to the 1-byte
// debug-exit port at 0xf4 carries the full 32-bit result code).
func (m *Machine) pioAccess(port uint64, data []byte, write bool) bool {
	d, off, ok := m.pio.Find(port, uint64(len(data)))
	if !ok {
		d, off, ok = m.pio.Find(port, 1)
	}
	if !ok {
		return false
	}
	if write {
		d.Write(off, data)
	} else {
		d.Read(off, data)
	}
	return true
}
