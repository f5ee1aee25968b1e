// Package boot loads a Linux kernel into guest memory for the 64-bit boot
// protocol (Documentation/arch/x86/boot.rst): an uncompressed ELF vmlinux at
// its physical load addresses; a bzImage by decompressing its payload on the
// host (gzip, bzip2, LZMA, XZ with the x86 BCJ filter, LZ4 legacy, zstd:
// payload.go, xz.go) and loading the ELF inside the same way; or, where the
// payload cannot be decoded here or Options.GuestDecompress asks, the
// bzImage's protected-mode kernel at its preferred address entered at the
// 64-bit entry (+0x200), to decompress itself in the guest. It also writes
// the "zero page" (struct boot_params) with the e820 map, the command line,
// the initrd and a SETUP_RNG_SEED setup_data node.
package boot

import (
	"bytes"
	"encoding/binary"
	"fmt"

	"godvm/vmm/layout"
)

// SetupHeader is struct setup_header (arch/x86/include/uapi/asm/bootparam.h),
// packed; it sits at offset 0x1f1 of both the bzImage and boot_params.
type SetupHeader struct {
	SetupSects          uint8  // 0x1f1
	RootFlags           uint16 // 0x1f2
	Syssize             uint32 // 0x1f4
	RAMSize             uint16 // 0x1f8
	VidMode             uint16 // 0x1fa
	RootDev             uint16 // 0x1fc
	BootFlag            uint16 // 0x1fe
	Jump                uint16 // 0x200
	Header              uint32 // 0x202 "HdrS"
	Version             uint16 // 0x206
	RealmodeSwtch       uint32 // 0x208
	StartSysSeg         uint16 // 0x20c
	KernelVersion       uint16 // 0x20e
	TypeOfLoader        uint8  // 0x210
	Loadflags           uint8  // 0x211
	SetupMoveSize       uint16 // 0x212
	Code32Start         uint32 // 0x214
	RamdiskImage        uint32 // 0x218
	RamdiskSize         uint32 // 0x21c
	BootsectKludge      uint32 // 0x220
	HeapEndPtr          uint16 // 0x224
	ExtLoaderVer        uint8  // 0x226
	ExtLoaderType       uint8  // 0x227
	CmdLinePtr          uint32 // 0x228
	InitrdAddrMax       uint32 // 0x22c
	KernelAlignment     uint32 // 0x230
	RelocatableKernel   uint8  // 0x234
	MinAlignment        uint8  // 0x235
	Xloadflags          uint16 // 0x236
	CmdlineSize         uint32 // 0x238
	HardwareSubarch     uint32 // 0x23c
	HardwareSubarchData uint64 // 0x240
	PayloadOffset       uint32 // 0x248
	PayloadLength       uint32 // 0x24c
	SetupData           uint64 // 0x250
	PrefAddress         uint64 // 0x258
	InitSize            uint32 // 0x260
	HandoverOffset      uint32 // 0x264
	KernelInfoOffset    uint32 // 0x268
}

// Offsets and magic numbers of the boot protocol.
const (
	HdrOffset    = 0x1f1
	HdrEnd       = 0x26c // end of the 2.15 header
	BootFlagAA55 = 0xaa55
	HdrSMagic    = 0x53726448 // "HdrS"

	LoaderUndefined = 0xff // type_of_loader for a boot loader without an ID

	LoadedHigh  = 1 << 0 // loadflags: protected-mode code at 0x100000
	KeepSegs    = 1 << 6
	CanUseHeap  = 1 << 7
	XLFKernel64 = 1 << 0 // xloadflags: has the 64-bit entry at +0x200
	XLFAbove4G  = 1 << 1 // kernel/boot_params/cmdline/initrd may be above 4G

	Entry64Offset = 0x200 // 64-bit entry relative to the protected-mode kernel

	E820Max      = 128 // E820_MAX_ENTRIES_ZEROPAGE
	SetupRNGSeed = 9   // setup_data type
	RNGSeedSize  = 32
)

// E820Entry is struct boot_e820_entry (packed, 20 bytes).
type E820Entry struct {
	Addr uint64
	Size uint64
	Type uint32
}

// BootParams is struct boot_params, the 4 KiB "zero page". Only the fields
// godvm writes are named; the rest stay zero.
type BootParams struct {
	_               [0x70]byte // screen_info, apm_bios_info, tboot_addr, ist_info
	ACPIRSDPAddr    uint64     // 0x070
	_               [0xc0 - 0x78]byte
	ExtRamdiskImage uint32 // 0x0c0
	ExtRamdiskSize  uint32 // 0x0c4
	ExtCmdLinePtr   uint32 // 0x0c8
	_               [0x1e8 - 0xcc]byte
	E820Entries     uint8 // 0x1e8
	_               [0x1ef - 0x1e9]byte
	Sentinel        uint8 // 0x1ef: must stay 0 or the kernel wipes fields
	_               [HdrOffset - 0x1f0]byte
	Hdr             SetupHeader // 0x1f1
	_               [0x2d0 - HdrEnd]byte
	E820Table       [E820Max]E820Entry // 0x2d0
	_               [0x1000 - (0x2d0 + 20*E820Max)]byte
}

// Bytes encodes bp as it lies in guest memory.
func (bp *BootParams) Bytes() []byte {
	var b bytes.Buffer
	b.Grow(4096)
	if err := binary.Write(&b, binary.LittleEndian, bp); err != nil {
		panic(err) // fixed-size struct: cannot fail
	}
	return b.Bytes()
}

// DecodeBootParams decodes a 4 KiB zero page (tests, diagnostics).
func DecodeBootParams(b []byte) (*BootParams, error) {
	if len(b) < 4096 {
		return nil, fmt.Errorf("boot_params: %d bytes, want 4096", len(b))
	}
	var bp BootParams
	if err := binary.Read(bytes.NewReader(b[:4096]), binary.LittleEndian, &bp); err != nil {
		return nil, err
	}
	return &bp, nil
}

// SetE820 fills the e820 table.
func (bp *BootParams) SetE820(m []layout.E820Entry) error {
	if len(m) > E820Max {
		return fmt.Errorf("boot_params: %d e820 entries, at most %d fit", len(m), E820Max)
	}
	bp.E820Table = [E820Max]E820Entry{}
	for i, e := range m {
		bp.E820Table[i] = E820Entry{e.Addr, e.Size, uint32(e.Type)}
	}
	bp.E820Entries = uint8(len(m))
	return nil
}

// SetupDataNode is a struct setup_data header followed by its payload.
type SetupDataNode struct {
	Next uint64
	Type uint32
	Len  uint32
}

// RNGSeedNode encodes a SETUP_RNG_SEED setup_data node (no successor).
func RNGSeedNode(seed []byte) []byte {
	b := make([]byte, 16+len(seed))
	binary.LittleEndian.PutUint64(b[0:], 0)
	binary.LittleEndian.PutUint32(b[8:], SetupRNGSeed)
	binary.LittleEndian.PutUint32(b[12:], uint32(len(seed)))
	copy(b[16:], seed)
	return b
}
