package vfio

// Non-posted 64-byte writes (ENQCMD, ENQCMDS) to a device behind vfio-user.
//
// vfio-user has one way to write a device region, REGION_WRITE, and a
// server cannot tell which instruction produced it. For a DSA portal that
// matters: a shared WQ takes only DMWr (ENQCMD/ENQCMDS, with an accept or
// Retry answer) and ignores posted writes (MOVDIR64B), a dedicated WQ the
// other way round (SPEC ch. 9, WQ modes). So a trapped REGION_WRITE to a BAR is
// a posted write, and a DMWr needs a way of its own, with its answer.
//
// That way is a device-specific region (vfio-user, like VFIO, allows
// regions past the nine PCI ones, described by the type capability), one
// per BAR that takes DMWr:
//
//   - type DMWrRegionType, subtype DMWrSubtypeBase | the BAR's region index;
//   - twice the BAR's size: a 64-byte write at offset o (64-byte aligned) is
//     an ENQCMD to BAR offset o when o < size, an ENQCMDS to BAR offset
//     o-size otherwise;
//   - the write's result is the answer: success is "accepted" (ZF=0), an
//     error (EAGAIN on the wire) is Retry (ZF=1).
//
// godvm's dsa-server offers it for the portal BAR; the passthrough device
// uses it when the device has one, and otherwise answers Retry itself rather
// than turning the DMWr into a posted write that a shared WQ would drop.
const (
	// DMWrRegionType is VFIO_REGION_TYPE_PCI_VENDOR_TYPE | the Intel vendor
	// ID: DMWr (ENQCMD/ENQCMDS) is Intel's, and so is the DSA that uses it.
	DMWrRegionType = 1<<31 | 0x8086
	// DMWrSubtypeBase | the BAR's region index (0-5) is the subtype; the
	// base spells "ENQ" and stays clear of the kernel's small Intel subtypes.
	DMWrSubtypeBase = 0x454e5100
)

// DMWrRegionInfo describes the DMWr region at index for the BAR with region
// index bar and size barSize.
func DMWrRegionInfo(index, bar uint32, barSize uint64) RegionInfo {
	return RegionInfo{Index: index, Flags: RegionFlagWrite, Size: 2 * barSize,
		Type: DMWrRegionType, Subtype: DMWrSubtypeBase | bar, HasType: true}
}

// DMWrOffset is where in a DMWr region a DMWr to BAR offset off goes
// (supervisor: ENQCMDS).
func DMWrOffset(off, barSize uint64, supervisor bool) uint64 {
	if supervisor {
		return barSize + off
	}
	return off
}

// DMWrTarget decodes an offset in a DMWr region of a BAR of barSize bytes.
func DMWrTarget(off, barSize uint64) (barOff uint64, supervisor bool) {
	if off < barSize {
		return off, false
	}
	return off - barSize, true
}

// FindDMWrRegions returns, per BAR region index, the DMWr region the device
// offers for it (BARs without one are not in the map).
func FindDMWrRegions(d Device) map[uint32]uint32 {
	out := map[uint32]uint32{}
	n := min(d.Info().NumRegions, 64)
	for i := uint32(PCINumRegions); i < n; i++ {
		ri, err := d.RegionInfo(i)
		if err != nil || !ri.HasType || ri.Type != DMWrRegionType || ri.Subtype&^0xff != DMWrSubtypeBase || !ri.Writable() {
			continue
		}
		if bar := ri.Subtype & 0xff; bar <= PCIBAR5RegionIndex {
			out[bar] = i
		}
	}
	return out
}
