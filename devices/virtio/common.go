package virtio

import (
	"encoding/binary"

	"godvm/devices/bus"
)

// The common configuration structure (virtio 1.2 §4.1.4.3): feature
// negotiation, the status byte, and the selected queue's size, vector,
// addresses and enable. Accesses of any width go through a rendered image
// (commonImage) and devices/bus's register helpers.

// Common configuration register offsets (struct virtio_pci_common_cfg).
const (
	ccDevFeatSel  = 0x00
	ccDevFeat     = 0x04
	ccDrvFeatSel  = 0x08
	ccDrvFeat     = 0x0c
	ccConfigVec   = 0x10
	ccNumQueues   = 0x12
	ccStatus      = 0x14
	ccGeneration  = 0x15
	ccQueueSel    = 0x16
	ccQueueSize   = 0x18
	ccQueueVec    = 0x1a
	ccQueueEnable = 0x1c
	ccQueueNotify = 0x1e
	ccQueueDesc   = 0x20
	ccQueueDriver = 0x28
	ccQueueDevice = 0x30
	ccNotifyData  = 0x38
	ccQueueReset  = 0x3a
)

// commonImage renders the common config as the driver sees it (locked).
func (d *Device) commonImage() [commonLen]byte {
	var b [commonLen]byte
	le := binary.LittleEndian
	le.PutUint32(b[ccDevFeatSel:], d.st.devFeatSel)
	if d.st.devFeatSel < 2 {
		le.PutUint32(b[ccDevFeat:], uint32(d.features>>(32*d.st.devFeatSel)))
	}
	le.PutUint32(b[ccDrvFeatSel:], d.st.drvFeatSel)
	if d.st.drvFeatSel < 2 {
		le.PutUint32(b[ccDrvFeat:], uint32(d.st.drvFeatures>>(32*d.st.drvFeatSel)))
	}
	le.PutUint16(b[ccConfigVec:], d.st.configVector)
	le.PutUint16(b[ccNumQueues:], uint16(len(d.queues)))
	b[ccStatus] = d.st.status
	b[ccGeneration] = d.st.generation
	le.PutUint16(b[ccQueueSel:], d.st.queueSel)
	if s := int(d.st.queueSel); s < len(d.queues) {
		q := &d.queues[s]
		le.PutUint16(b[ccQueueSize:], q.size)
		le.PutUint16(b[ccQueueVec:], q.vector)
		if q.enabled {
			le.PutUint16(b[ccQueueEnable:], 1)
		}
		le.PutUint16(b[ccQueueNotify:], uint16(s))
		le.PutUint64(b[ccQueueDesc:], q.desc)
		le.PutUint64(b[ccQueueDriver:], q.avail)
		le.PutUint64(b[ccQueueDevice:], q.used)
		le.PutUint16(b[ccNotifyData:], uint16(s))
	} else {
		le.PutUint16(b[ccQueueVec:], NoVector)
	}
	return b
}

type commonRegion Device

func (c *commonRegion) Read(off uint64, data []byte) {
	d := (*Device)(c)
	d.mu.Lock()
	img := d.commonImage()
	d.mu.Unlock()
	clear(data)
	bus.ReadRegs(img[:], 0, off, data)
}

// Write patches the rendered image and applies each field the access
// touched, so any access width works.
func (c *commonRegion) Write(off uint64, data []byte) {
	d := (*Device)(c)
	if off >= commonLen {
		return
	}
	d.ctl.Lock()
	defer d.ctl.Unlock()
	d.mu.Lock()
	img := d.commonImage()
	bus.WriteRegs(img[:], 0, off, data)
	touched := func(f, n uint64) bool { return bus.Touches(off, len(data), f, n) }
	le := binary.LittleEndian
	var newStatus = -1
	if touched(ccDevFeatSel, 4) {
		d.st.devFeatSel = le.Uint32(img[ccDevFeatSel:])
	}
	if touched(ccDrvFeatSel, 4) {
		d.st.drvFeatSel = le.Uint32(img[ccDrvFeatSel:])
	}
	if touched(ccDrvFeat, 4) && d.st.drvFeatSel < 2 && d.st.status&StatusFeaturesOK == 0 {
		sh := 32 * d.st.drvFeatSel
		d.st.drvFeatures = d.st.drvFeatures&^(0xffffffff<<sh) | uint64(le.Uint32(img[ccDrvFeat:]))<<sh
	}
	if touched(ccConfigVec, 2) {
		d.st.configVector = d.checkVector(le.Uint16(img[ccConfigVec:]))
	}
	if touched(ccQueueSel, 2) {
		d.st.queueSel = le.Uint16(img[ccQueueSel:])
	}
	if s := int(d.st.queueSel); s < len(d.queues) {
		q := &d.queues[s]
		if touched(ccQueueVec, 2) {
			q.vector = d.checkVector(le.Uint16(img[ccQueueVec:]))
		}
		if !q.enabled && d.st.status&StatusDriverOK == 0 {
			if touched(ccQueueSize, 2) {
				q.size = le.Uint16(img[ccQueueSize:])
			}
			if touched(ccQueueDesc, 8) {
				q.desc = le.Uint64(img[ccQueueDesc:])
			}
			if touched(ccQueueDriver, 8) {
				q.avail = le.Uint64(img[ccQueueDriver:])
			}
			if touched(ccQueueDevice, 8) {
				q.used = le.Uint64(img[ccQueueDevice:])
			}
			if touched(ccQueueEnable, 2) && le.Uint16(img[ccQueueEnable:]) == 1 {
				q.enabled = true
			}
		}
	}
	if touched(ccStatus, 1) {
		newStatus = int(img[ccStatus])
	}
	d.mu.Unlock()
	if newStatus >= 0 {
		d.setStatus(uint8(newStatus))
	}
}

func (d *Device) checkVector(v uint16) uint16 {
	if v != NoVector && int(v) >= d.msix.NumVectors() {
		return NoVector
	}
	return v
}
