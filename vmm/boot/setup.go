package boot

import (
	"fmt"
	"strings"

	"godvm/addr"
	"godvm/guestmem"
	"godvm/vmm/layout"
)

// Params is what the zero page says besides the kernel's own header.
type Params struct {
	Cmdline    string
	RAM        []addr.Range
	InitrdAddr uint64 // from PlaceInitrd
	InitrdSize uint64 // 0: no initrd
	RSDP       uint64 // ACPI RSDP address; 0: no ACPI tables
	Seed       []byte // SETUP_RNG_SEED payload; nil: none
}

const initrdAlign = 2 * layout.MiB

// PlaceInitrd picks the initrd's address: as high as possible below both the
// end of RAM below 4 GiB and the kernel's initrd_addr_max, 2 MiB aligned, and
// above the kernel.
func PlaceInitrd(k *Kernel, size uint64, ram []addr.Range) (uint64, error) {
	if size == 0 {
		return 0, nil
	}
	total := uint64(0)
	for _, r := range ram {
		total += r.Size
	}
	if size >= total {
		return 0, fmt.Errorf("initrd (%d MiB) is larger than guest memory (%d MiB); increase --memory",
			size>>20, total>>20)
	}
	top := min(layout.LowRAMTop(ram), k.InitrdAddrMax+1)
	if size > top {
		return 0, fmt.Errorf("initrd (%d MiB) does not fit below %#x; increase --memory", size>>20, top)
	}
	addr := (top - size) &^ (initrdAlign - 1)
	if addr < k.End {
		addr = (top - size) &^ (layout.KiB*4 - 1)
	}
	if addr < k.End || addr < layout.HighMemStart {
		return 0, fmt.Errorf("initrd (%d MiB) does not fit in guest RAM above the kernel (which ends at %d MiB, RAM below 4 GiB ends at %d MiB); increase --memory",
			size>>20, (k.End+layout.MiB-1)>>20, top>>20)
	}
	return addr, nil
}

// CheckCmdline validates a command line for k.
func (k *Kernel) CheckCmdline(cmdline string) error {
	if strings.IndexByte(cmdline, 0) >= 0 {
		return fmt.Errorf("kernel command line contains a NUL byte")
	}
	if len(cmdline) > k.CmdlineMax {
		return fmt.Errorf("kernel command line is %d bytes; this kernel accepts at most %d", len(cmdline), k.CmdlineMax)
	}
	return nil
}

// BuildBootParams assembles the zero page for k.
func BuildBootParams(k *Kernel, p Params) (*BootParams, error) {
	if err := k.CheckCmdline(p.Cmdline); err != nil {
		return nil, err
	}
	bp := &BootParams{}
	if k.Hdr != nil {
		bp.Hdr = *k.Hdr // boot.rst: copy the image's setup header, then fill in
	} else {
		bp.Hdr = SetupHeader{
			BootFlag:        BootFlagAA55,
			Header:          HdrSMagic,
			KernelAlignment: 0x1000000,
		}
	}
	h := &bp.Hdr
	h.TypeOfLoader = LoaderUndefined
	h.Loadflags |= LoadedHigh | CanUseHeap
	h.HeapEndPtr = 0xfe00 - 0x200 // boot.rst: setup heap ends 0x200 below 0xfe00
	h.CmdLinePtr = layout.Cmdline
	h.CmdlineSize = uint32(k.CmdlineMax)
	h.HardwareSubarch = 0 // X86_SUBARCH_PC
	h.HardwareSubarchData = 0
	h.VidMode = 0xffff // "normal"
	if p.InitrdSize > 0 {
		if p.InitrdAddr+p.InitrdSize > 1<<32 {
			return nil, fmt.Errorf("initrd at %#x+%#x is above 4 GiB", p.InitrdAddr, p.InitrdSize)
		}
		h.RamdiskImage = uint32(p.InitrdAddr)
		h.RamdiskSize = uint32(p.InitrdSize)
	} else {
		h.RamdiskImage, h.RamdiskSize = 0, 0
	}
	h.SetupData = 0
	if len(p.Seed) > 0 {
		if 16+len(p.Seed) > 4096 {
			return nil, fmt.Errorf("RNG seed of %d bytes does not fit in a page", len(p.Seed))
		}
		h.SetupData = layout.SetupData
	}
	bp.ACPIRSDPAddr = p.RSDP
	if err := bp.SetE820(layout.E820(p.RAM)); err != nil {
		return nil, err
	}
	return bp, nil
}

// Write puts the command line, the RNG seed setup_data node and the zero page
// into guest memory. The kernel itself is written by k.Load and the initrd by
// the caller (at p.InitrdAddr).
func Write(mem *guestmem.Memory, k *Kernel, p Params) error {
	bp, err := BuildBootParams(k, p)
	if err != nil {
		return err
	}
	cl := append([]byte(p.Cmdline), 0)
	if err := mem.WriteAt(cl, layout.Cmdline); err != nil {
		return fmt.Errorf("command line: %w", err)
	}
	if len(p.Seed) > 0 {
		if err := mem.WriteAt(RNGSeedNode(p.Seed), layout.SetupData); err != nil {
			return fmt.Errorf("setup_data: %w", err)
		}
	}
	if err := mem.WriteAt(bp.Bytes(), layout.ZeroPage); err != nil {
		return fmt.Errorf("boot_params: %w", err)
	}
	return nil
}
