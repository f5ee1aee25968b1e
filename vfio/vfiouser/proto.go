// Package vfiouser speaks vfio-user (QEMU docs/interop/vfio-user.rst): a
// client that is a vfio.Device, and a server that exposes a Backend (the
// software DSA in `godvm dsa-server`). Messages are host-endian; fds travel as
// SCM_RIGHTS on the message that needs them.
package vfiouser

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
)

// Command numbers.
const (
	CmdVersion         = 1
	CmdDMAMap          = 2
	CmdDMAUnmap        = 3
	CmdDeviceGetInfo   = 4
	CmdGetRegionInfo   = 5
	CmdGetRegionIOFDs  = 6
	CmdGetIRQInfo      = 7
	CmdSetIRQs         = 8
	CmdRegionRead      = 9
	CmdRegionWrite     = 10
	CmdDMARead         = 11
	CmdDMAWrite        = 12
	CmdDeviceReset     = 13
	CmdRegionWriteMult = 15
	CmdDeviceFeature   = 16
)

// Header flags.
const (
	FlagTypeMask = 0xf
	FlagCommand  = 0
	FlagReply    = 1
	FlagNoReply  = 0x10
	FlagError    = 0x20
)

// HeaderSize is the size of the message header; msg_size includes it.
const HeaderSize = 16

// Protocol version this package speaks.
const (
	VersionMajor = 0
	VersionMinor = 2
)

// Defaults from the spec when a capability is absent.
const (
	DefaultMaxMsgFDs       = 1
	DefaultMaxDataXferSize = 1 << 20
	// MaxFDsAccepted is what this package accepts per message.
	MaxFDsAccepted = 16
	// maxMsgSize bounds a message: data transfer plus headroom for headers.
	maxMsgSize = DefaultMaxDataXferSize + 4096
)

// DMA flags.
const (
	DMAFlagRead  = 1
	DMAFlagWrite = 2
)

// Header is the 16-byte message header.
type Header struct {
	MsgID   uint16
	Command uint16
	Size    uint32
	Flags   uint32
	Error   uint32
}

func (h Header) IsReply() bool { return h.Flags&FlagTypeMask == FlagReply }

// Encode appends the header to b.
func (h Header) Encode(b []byte) []byte {
	b = binary.NativeEndian.AppendUint16(b, h.MsgID)
	b = binary.NativeEndian.AppendUint16(b, h.Command)
	b = binary.NativeEndian.AppendUint32(b, h.Size)
	b = binary.NativeEndian.AppendUint32(b, h.Flags)
	return binary.NativeEndian.AppendUint32(b, h.Error)
}

// DecodeHeader parses a header and checks its size field.
func DecodeHeader(b []byte) (Header, error) {
	if len(b) < HeaderSize {
		return Header{}, fmt.Errorf("vfio-user: short header (%d bytes)", len(b))
	}
	h := Header{
		MsgID:   binary.NativeEndian.Uint16(b[0:]),
		Command: binary.NativeEndian.Uint16(b[2:]),
		Size:    binary.NativeEndian.Uint32(b[4:]),
		Flags:   binary.NativeEndian.Uint32(b[8:]),
		Error:   binary.NativeEndian.Uint32(b[12:]),
	}
	if h.Size < HeaderSize {
		return h, fmt.Errorf("vfio-user: message size %d is smaller than the header", h.Size)
	}
	if h.Size > maxMsgSize {
		return h, fmt.Errorf("vfio-user: message size %d exceeds %d", h.Size, maxMsgSize)
	}
	return h, nil
}

// Msg is one message: header, payload (after the header) and passed fds.
type Msg struct {
	Header
	Payload []byte
	FDs     []int
}

// Caps are the capabilities exchanged in VERSION.
type Caps struct {
	MaxMsgFDs       uint32 `json:"max_msg_fds,omitempty"`
	MaxDataXferSize uint32 `json:"max_data_xfer_size,omitempty"`
	MaxDMAMaps      uint32 `json:"max_dma_maps,omitempty"`
	PgSizes         uint64 `json:"pgsizes,omitempty"`
}

type versionJSON struct {
	Capabilities *Caps `json:"capabilities,omitempty"`
}

// Version is the VERSION payload.
type Version struct {
	Major, Minor uint16
	Caps         Caps
}

// Encode builds the payload: major, minor, NUL-terminated JSON.
func (v Version) Encode() []byte {
	b := binary.NativeEndian.AppendUint16(nil, v.Major)
	b = binary.NativeEndian.AppendUint16(b, v.Minor)
	j, _ := json.Marshal(versionJSON{Capabilities: &v.Caps})
	b = append(b, j...)
	return append(b, 0)
}

// DecodeVersion parses a VERSION payload. Missing capabilities take the
// spec's defaults; unknown ones are ignored.
func DecodeVersion(p []byte) (Version, error) {
	if len(p) < 4 {
		return Version{}, fmt.Errorf("vfio-user: VERSION payload is %d bytes", len(p))
	}
	v := Version{Major: binary.NativeEndian.Uint16(p), Minor: binary.NativeEndian.Uint16(p[2:])}
	j := p[4:]
	if i := indexByte(j, 0); i >= 0 {
		j = j[:i]
	}
	if len(j) > 0 {
		var vj versionJSON
		if err := json.Unmarshal(j, &vj); err != nil {
			return Version{}, fmt.Errorf("vfio-user: VERSION capabilities are not JSON: %v", err)
		}
		if vj.Capabilities != nil {
			v.Caps = *vj.Capabilities
		}
	}
	if v.Caps.MaxMsgFDs == 0 {
		v.Caps.MaxMsgFDs = DefaultMaxMsgFDs
	}
	if v.Caps.MaxDataXferSize == 0 {
		v.Caps.MaxDataXferSize = DefaultMaxDataXferSize
	}
	return v, nil
}

func indexByte(b []byte, c byte) int {
	for i, x := range b {
		if x == c {
			return i
		}
	}
	return -1
}

// DMAMap is the DMA_MAP payload (32 bytes).
type DMAMap struct {
	Argsz, Flags          uint32
	Offset, Address, Size uint64
}

func (m DMAMap) Encode() []byte {
	b := binary.NativeEndian.AppendUint32(nil, 32)
	b = binary.NativeEndian.AppendUint32(b, m.Flags)
	b = binary.NativeEndian.AppendUint64(b, m.Offset)
	b = binary.NativeEndian.AppendUint64(b, m.Address)
	return binary.NativeEndian.AppendUint64(b, m.Size)
}

func DecodeDMAMap(p []byte) (DMAMap, error) {
	if len(p) < 32 {
		return DMAMap{}, errShort("DMA_MAP", len(p), 32)
	}
	return DMAMap{binary.NativeEndian.Uint32(p), binary.NativeEndian.Uint32(p[4:]),
		binary.NativeEndian.Uint64(p[8:]), binary.NativeEndian.Uint64(p[16:]), binary.NativeEndian.Uint64(p[24:])}, nil
}

// DMAUnmap is the DMA_UNMAP payload (24 bytes).
type DMAUnmap struct {
	Argsz, Flags  uint32
	Address, Size uint64
}

func (m DMAUnmap) Encode() []byte {
	b := binary.NativeEndian.AppendUint32(nil, 24)
	b = binary.NativeEndian.AppendUint32(b, m.Flags)
	b = binary.NativeEndian.AppendUint64(b, m.Address)
	return binary.NativeEndian.AppendUint64(b, m.Size)
}

func DecodeDMAUnmap(p []byte) (DMAUnmap, error) {
	if len(p) < 24 {
		return DMAUnmap{}, errShort("DMA_UNMAP", len(p), 24)
	}
	return DMAUnmap{binary.NativeEndian.Uint32(p), binary.NativeEndian.Uint32(p[4:]),
		binary.NativeEndian.Uint64(p[8:]), binary.NativeEndian.Uint64(p[16:])}, nil
}

// RegionAccess is the REGION_READ/REGION_WRITE header (16 bytes).
type RegionAccess struct {
	Offset uint64
	Region uint32
	Count  uint32
}

func (r RegionAccess) Encode(data []byte) []byte {
	b := make([]byte, 0, 16+len(data))
	b = binary.NativeEndian.AppendUint64(b, r.Offset)
	b = binary.NativeEndian.AppendUint32(b, r.Region)
	b = binary.NativeEndian.AppendUint32(b, r.Count)
	return append(b, data...)
}

// DecodeRegionAccess returns the header and the data that follows it.
func DecodeRegionAccess(p []byte) (RegionAccess, []byte, error) {
	if len(p) < 16 {
		return RegionAccess{}, nil, errShort("REGION access", len(p), 16)
	}
	return RegionAccess{binary.NativeEndian.Uint64(p), binary.NativeEndian.Uint32(p[8:]), binary.NativeEndian.Uint32(p[12:])}, p[16:], nil
}

// DMAAccess is the DMA_READ/DMA_WRITE header (16 bytes).
type DMAAccess struct {
	Address, Count uint64
}

func DecodeDMAAccess(p []byte) (DMAAccess, []byte, error) {
	if len(p) < 16 {
		return DMAAccess{}, nil, errShort("DMA access", len(p), 16)
	}
	return DMAAccess{binary.NativeEndian.Uint64(p), binary.NativeEndian.Uint64(p[8:])}, p[16:], nil
}

func errShort(what string, got, want int) error {
	return fmt.Errorf("vfio-user: %s payload is %d bytes, want %d", what, got, want)
}

// RemoteError is an error reply from the peer.
type RemoteError struct {
	Command uint16
	Errno   uint32
}

func (e *RemoteError) Error() string {
	return fmt.Sprintf("vfio-user: %s failed on the server: errno %d", CommandName(e.Command), e.Errno)
}

// CommandName names a command for messages.
func CommandName(c uint16) string {
	names := map[uint16]string{CmdVersion: "VERSION", CmdDMAMap: "DMA_MAP", CmdDMAUnmap: "DMA_UNMAP",
		CmdDeviceGetInfo: "DEVICE_GET_INFO", CmdGetRegionInfo: "DEVICE_GET_REGION_INFO", CmdGetRegionIOFDs: "DEVICE_GET_REGION_IO_FDS",
		CmdGetIRQInfo: "DEVICE_GET_IRQ_INFO", CmdSetIRQs: "DEVICE_SET_IRQS", CmdRegionRead: "REGION_READ",
		CmdRegionWrite: "REGION_WRITE", CmdDMARead: "DMA_READ", CmdDMAWrite: "DMA_WRITE", CmdDeviceReset: "DEVICE_RESET",
		CmdRegionWriteMult: "REGION_WRITE_MULTI", CmdDeviceFeature: "DEVICE_FEATURE"}
	if n, ok := names[c]; ok {
		return n
	}
	return fmt.Sprintf("command %d", c)
}

// ErrClosed is returned once the connection is closed locally.
var ErrClosed = errors.New("vfio-user: connection closed")
