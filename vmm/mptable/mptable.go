// Package mptable builds the Intel MultiProcessor Specification 1.4 tables
// (floating pointer + configuration table) that tell a guest without ACPI
// how many CPUs it has, where the IOAPIC is and how ISA IRQs reach it.
package mptable

import (
	"encoding/binary"
	"fmt"

	"godvm/vmm/layout"
)

// Table entry types and sizes.
const (
	entryProcessor = 0
	entryBus       = 1
	entryIOAPIC    = 2
	entryIOInt     = 3
	entryLocalInt  = 4

	fpSize        = 16
	headerSize    = 44
	processorSize = 20
	smallSize     = 8

	intINT    = 0
	intNMI    = 1
	intExtINT = 3

	cpuEnabled = 1 << 0
	cpuBSP     = 1 << 1

	apicVersion   = 0x14
	ioapicVersion = 0x11
	cpuSignature  = 0x600       // family 6
	cpuFeatures   = 1<<0 | 1<<9 // FPU, APIC
	isaBus        = 0
	specRev       = 4
	legacyIRQs    = 16
)

// Size is the number of bytes Bytes(ncpu) returns.
func Size(ncpu int) int {
	return fpSize + headerSize + ncpu*processorSize + smallSize /*bus*/ + smallSize /*ioapic*/ +
		(legacyIRQs-1)*smallSize + 2*smallSize
}

// IOAPICID is the IOAPIC's ID in a machine with ncpu CPUs (APIC IDs 0..ncpu-1
// are taken by the CPUs).
func IOAPICID(ncpu int) uint8 { return uint8(ncpu) }

// Bytes returns the floating pointer followed by the configuration table, to
// be written at base (layout.MPTable): ncpu processors (CPU 0 is the BSP), an
// ISA bus, the IOAPIC, ISA IRQs 0-15 (IRQ 0 on pin 2 where KVM's PIT is wired,
// IRQ 2 the cascade left out), ExtINT on LINT0 and NMI on LINT1.
func Bytes(base uint64, ncpu int) ([]byte, error) {
	if ncpu < 1 || ncpu > layout.MaxVCPUs {
		return nil, fmt.Errorf("mptable: %d CPUs (1-%d supported)", ncpu, layout.MaxVCPUs)
	}
	n := Size(ncpu)
	if n > layout.MPTableMax || base+uint64(n) > 1<<32 {
		return nil, fmt.Errorf("mptable: %d bytes do not fit", n)
	}
	le := binary.LittleEndian
	b := make([]byte, n)

	fp := b[:fpSize]
	copy(fp, "_MP_")
	le.PutUint32(fp[4:], uint32(base+fpSize))
	fp[8] = 1 // length in 16-byte units
	fp[9] = specRev
	// fp[11] feature byte 1 = 0: a configuration table is present.
	fp[10] = checksum(fp)

	t := b[fpSize:]
	copy(t, "PCMP")
	t[6] = specRev
	copy(t[8:16], "GODVM   ")
	copy(t[16:28], "GODVM MPTAB ")
	le.PutUint32(t[36:], layout.LAPICBase)
	off := headerSize
	count := 0
	put := func(e []byte) {
		copy(t[off:], e)
		off += len(e)
		count++
	}
	for cpu := 0; cpu < ncpu; cpu++ {
		e := make([]byte, processorSize)
		e[0] = entryProcessor
		e[1] = uint8(cpu)
		e[2] = apicVersion
		e[3] = cpuEnabled
		if cpu == 0 {
			e[3] |= cpuBSP
		}
		le.PutUint32(e[4:], cpuSignature)
		le.PutUint32(e[8:], cpuFeatures)
		put(e)
	}
	put([]byte{entryBus, isaBus, 'I', 'S', 'A', ' ', ' ', ' '})
	io := []byte{entryIOAPIC, IOAPICID(ncpu), ioapicVersion, 1, 0, 0, 0, 0}
	le.PutUint32(io[4:], layout.IOAPICBase)
	put(io)
	for irq := 0; irq < legacyIRQs; irq++ {
		if irq == 2 {
			continue // cascade
		}
		pin := uint8(irq)
		if irq == 0 {
			pin = layout.PITGSI
		}
		// flags 0: conforms to the bus (ISA: edge, active high)
		put([]byte{entryIOInt, intINT, 0, 0, isaBus, uint8(irq), IOAPICID(ncpu), pin})
	}
	put([]byte{entryLocalInt, intExtINT, 0, 0, isaBus, 0, 0xff, 0})
	put([]byte{entryLocalInt, intNMI, 0, 0, isaBus, 0, 0xff, 1})

	le.PutUint16(t[4:], uint16(off))
	le.PutUint16(t[34:], uint16(count))
	t[7] = checksum(t[:off])
	return b, nil
}

// checksum returns the byte that makes b sum to zero (b's checksum byte must
// be zero when called).
func checksum(b []byte) uint8 {
	var s uint8
	for _, x := range b {
		s += x
	}
	return -s
}
