package dsa

import (
	"godvm/devices/bus"
)

// Portals returns BAR2's handler: four 4 KiB portal pages per WQ (unlimited
// MSI-X, limited MSI-X, unlimited IMS, limited IMS; Linux idxd: idxd_get_wq_portal_offset). It
// implements bus.Wide64 for MOVDIR64B/ENQCMD/ENQCMDS.
//
// Accesses that are not 64-byte wide writes behave as on the hardware (SPEC
// 9.1.1.2, 9.3): reads return all zeros; writes smaller than 64 bytes are
// ignored. A plain (non-Wide64) 64-byte aligned write is a 64-byte posted
// memory write on the fabric, exactly what MOVDIR64B produces, so it is
// treated as MOVDIR64B (a vfio-user client forwarding a guest's MOVDIR64B as
// a region write lands here).
func (d *Device) Portals() Portals { return Portals{d} }

// Portals is the BAR2 handler (bus.Device and bus.Wide64).
type Portals struct{ d *Device }

// Size is BAR2's size.
func (p Portals) Size() uint64 { return p.d.cfg.PortalBARSize() }

func (p Portals) Read(off uint64, data []byte) {
	for i := range data {
		data[i] = 0
	}
}

func (p Portals) Write(off uint64, data []byte) {
	if len(data) != 64 {
		return
	}
	p.Write64B(off, (*[64]byte)(data), bus.MOVDIR64B)
}

// Write64B submits a descriptor. accepted=false is ENQCMD's Retry (ZF=1);
// for MOVDIR64B it is informational (the write was dropped).
func (p Portals) Write64B(off uint64, data *[64]byte, kind bus.WideKind) bool {
	if off&63 != 0 {
		return false // bits 5:0 of a portal address must be zero
	}
	wq := int(off / PortalStride)
	if wq >= p.d.cfg.WQs {
		return false
	}
	page := int(off % PortalStride / PortalPage)
	return p.d.submit(wq, page, data, kind)
}

var _ bus.Wide64 = Portals{}
var _ bus.Device = Portals{}
