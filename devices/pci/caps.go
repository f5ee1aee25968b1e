package pci

import (
	"encoding/binary"
	"fmt"
)

// AddCapability appends a standard capability to the list at 0x34. body is
// the capability after its two header bytes (ID, next pointer); wmask, if
// not nil, gives the writable bits of body (same length). It returns the
// capability's offset.
func (c *ConfigSpace) AddCapability(id uint8, body, wmask []byte) (uint16, error) {
	if wmask != nil && len(wmask) != len(body) {
		return 0, fmt.Errorf("pci: %s: capability %#x: mask length %d != body length %d", c.name, id, len(wmask), len(body))
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	off := c.capEnd
	n := uint16(2 + len(body))
	end := (off + n + 3) &^ 3
	if end > 0x100 {
		return 0, fmt.Errorf("pci: %s: no room for capability %#x (%d bytes)", c.name, id, n)
	}
	c.data[off] = id
	c.data[off+1] = 0
	copy(c.data[off+2:], body)
	if wmask != nil {
		copy(c.wmask[off+2:], wmask)
	}
	if c.lastCap == 0 {
		c.data[RegCapPtr] = byte(off)
		binary.LittleEndian.PutUint16(c.data[RegStatus:], binary.LittleEndian.Uint16(c.data[RegStatus:])|StatusCapList)
	} else {
		c.data[c.lastCap+1] = byte(off)
	}
	c.lastCap, c.capEnd = off, end
	return off, nil
}

// AddExtCapability appends an extended capability (offset 0x100 and up).
// body follows the 4-byte header (ID, version, next).
func (c *ConfigSpace) AddExtCapability(id uint16, version uint8, body, wmask []byte) (uint16, error) {
	if wmask != nil && len(wmask) != len(body) {
		return 0, fmt.Errorf("pci: %s: ext capability %#x: mask length %d != body length %d", c.name, id, len(wmask), len(body))
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	off := c.extEnd
	n := uint16(4 + len(body))
	end := (off + n + 3) &^ 3
	if int(end) > ConfigSize {
		return 0, fmt.Errorf("pci: %s: no room for ext capability %#x", c.name, id)
	}
	binary.LittleEndian.PutUint32(c.data[off:], uint32(id)|uint32(version&0xf)<<16)
	copy(c.data[off+4:], body)
	if wmask != nil {
		copy(c.wmask[off+4:], wmask)
	}
	if c.lastExt != 0 {
		h := binary.LittleEndian.Uint32(c.data[c.lastExt:])
		binary.LittleEndian.PutUint32(c.data[c.lastExt:], h&0xfffff|uint32(off)<<20)
	}
	c.lastExt, c.extEnd = off, end
	return off, nil
}

// FindCapability walks the standard list and returns the offset of the
// first capability with id, or 0.
func (c *ConfigSpace) FindCapability(id uint8) uint16 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if binary.LittleEndian.Uint16(c.data[RegStatus:])&StatusCapList == 0 {
		return 0
	}
	off := uint16(c.data[RegCapPtr] &^ 3)
	for n := 0; off >= 0x40 && n < 48; n++ {
		if c.data[off] == id {
			return off
		}
		off = uint16(c.data[off+1] &^ 3)
	}
	return 0
}

// FindExtCapability walks the extended list and returns the offset of the
// first capability with id, or 0.
func (c *ConfigSpace) FindExtCapability(id uint16) uint16 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	off := uint16(0x100)
	for n := 0; off >= 0x100 && int(off) < ConfigSize && n < 960; n++ {
		h := binary.LittleEndian.Uint32(c.data[off:])
		if h == 0 {
			return 0
		}
		if uint16(h) == id {
			return off
		}
		off = uint16(h>>20) &^ 3
	}
	return 0
}

// PCIeType is the device/port type field of the PCI Express capability.
type PCIeType uint8

const (
	PCIeEndpoint       PCIeType = 0x0
	PCIeLegacyEndpoint PCIeType = 0x1
	PCIeRCiEP          PCIeType = 0x9 // root complex integrated endpoint (what a DSA is)
)

// PCI Express capability register offsets (relative to the capability).
const (
	PCIeCapReg  = 0x02
	PCIeDevCap  = 0x04
	PCIeDevCtl  = 0x08
	PCIeDevSta  = 0x0a
	PCIeDevCap2 = 0x24
	PCIeDevCtl2 = 0x28
	pcieCapLen  = 0x3c
)

// DevCap bits.
const (
	DevCapRBER = 1 << 15 // role-based error reporting
	DevCapFLR  = 1 << 28 // function-level reset
)

// AddPCIeCapability adds a version-2 PCI Express capability of type t with
// the given Device Capabilities (DevCapRBER is always set). Its presence is
// what makes Linux use the extended (4 KiB) configuration space.
func (c *ConfigSpace) AddPCIeCapability(t PCIeType, devCap uint32) (uint16, error) {
	body := make([]byte, pcieCapLen-2)
	mask := make([]byte, pcieCapLen-2)
	le := binary.LittleEndian
	le.PutUint16(body[PCIeCapReg-2:], 2|uint16(t)<<4)
	le.PutUint32(body[PCIeDevCap-2:], devCap|DevCapRBER)
	le.PutUint16(mask[PCIeDevCtl-2:], 0x7fff) // error enables, payload, ext tag, no snoop, MRRS
	if devCap&DevCapFLR != 0 {
		le.PutUint16(mask[PCIeDevCtl-2:], 0xffff) // bit 15: initiate FLR (reads 0; see FLR hooks)
	}
	le.PutUint32(body[PCIeDevCap2-2:], 1<<4) // completion timeout disable supported
	le.PutUint16(mask[PCIeDevCtl2-2:], 0x005f)
	off, err := c.AddCapability(CapPCIe, body, mask)
	if err != nil {
		return 0, err
	}
	c.SetW1C(off+PCIeDevSta, []byte{0x0f})
	return off, nil
}

// PASID capability fields (relative to the capability).
const (
	PASIDCap     = 0x04
	PASIDCtl     = 0x06
	PASIDExec    = 1 << 1
	PASIDPriv    = 1 << 2
	PASIDEnable  = 1 << 0
	pasidBodyLen = 4
)

// AddPASIDCapability adds the PASID extended capability with a maximum
// PASID width of width bits (1..20) and the given execute/privileged mode
// support (PASIDExec, PASIDPriv). The control register's enable, execute and
// privileged bits are writable.
func (c *ConfigSpace) AddPASIDCapability(width uint8, modes uint16) (uint16, error) {
	if width < 1 || width > 20 {
		return 0, fmt.Errorf("pci: %s: PASID width %d out of range", c.name, width)
	}
	body := make([]byte, pasidBodyLen)
	mask := make([]byte, pasidBodyLen)
	le := binary.LittleEndian
	le.PutUint16(body[0:], modes&(PASIDExec|PASIDPriv)|uint16(width&0x1f)<<8)
	le.PutUint16(mask[2:], PASIDEnable|modes&(PASIDExec|PASIDPriv))
	return c.AddExtCapability(ExtPASID, 1, body, mask)
}
