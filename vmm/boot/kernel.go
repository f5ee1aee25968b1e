package boot

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"

	"godvm/addr"
	"godvm/guestmem"
	"godvm/vmm/layout"
)

// Format says what kind of kernel image was given.
type Format int

const (
	FormatELF     Format = iota + 1 // uncompressed vmlinux
	FormatBzImage                   // bzImage entered at its 64-bit entry: it decompresses itself in the guest
	// FormatBzImageELF is a bzImage whose payload godvm decompressed on
	// the host: the ELF inside is loaded and entered as a vmlinux is.
	FormatBzImageELF
)

func (f Format) String() string {
	switch f {
	case FormatELF:
		return "ELF vmlinux"
	case FormatBzImage:
		return "bzImage"
	case FormatBzImageELF:
		return "bzImage, decompressed by godvm"
	}
	return "unknown"
}

// Segment is a piece of the image copied to guest memory at Addr; the
// MemSize-len(Data) bytes after it are zeroed.
type Segment struct {
	Addr    uint64
	Data    []byte
	MemSize uint64
}

// Kernel is a parsed, not yet loaded kernel image.
type Kernel struct {
	Format   Format
	Entry    uint64    // guest-physical 64-bit entry point
	Segments []Segment // what to copy where
	// Start and End bound the guest-physical memory the kernel needs
	// (for a bzImage: init_size from the load address).
	Start, End uint64
	// Hdr is the image's setup header (bzImage only).
	Hdr *SetupHeader
	// CmdlineMax is the longest command line the kernel accepts, without
	// the terminating NUL.
	CmdlineMax int
	// InitrdAddrMax is the highest address the initrd may end at (inclusive).
	InitrdAddrMax uint64

	// Compression is a bzImage's payload format (CompressionXZ, ...; ""
	// when not recognised or not looked at).
	Compression string
	// Decompressed is the size of the ELF godvm decompressed
	// (FormatBzImageELF).
	Decompressed int
	// Note says, in one line, why a bzImage godvm was asked to decompress
	// is left to decompress itself in the guest ("" otherwise).
	Note string

	unmap func() error // releases ReadKernel's mapping
}

// Options say how a kernel file is read.
type Options struct {
	// GuestDecompress leaves a bzImage as it is: entered at its 64-bit
	// entry, its own decompressor runs in the guest (and may randomise
	// its physical address). Otherwise godvm decompresses the payload.
	GuestDecompress bool
	// HeaderOnly checks a bzImage's header and finds its payload without
	// decompressing it (a quick validation; the result cannot be loaded
	// when the payload would be decompressed).
	HeaderOnly bool
	// Limit bounds the decompressed payload (0: MaxDecompressed).
	Limit int
}

// ErrNotKernel is wrapped by Parse errors for files that are neither a
// 64-bit x86 ELF nor a bzImage.
var ErrNotKernel = errors.New("not an x86-64 Linux kernel (expected an ELF64 x86-64 vmlinux or a bzImage with a 64-bit entry)")

// ReadKernel maps and parses a kernel file. The mapping (read-only, shared
// with the page cache: a vmlinux with debug information can be hundreds of
// MiB) backs the segments until Close.
func ReadKernel(path string) (*Kernel, error) { return ReadKernelWith(path, Options{}) }

// ReadKernelWith is ReadKernel with options. A bzImage whose payload godvm
// decompressed no longer needs the file: its mapping is released at once.
func ReadKernelWith(path string, o Options) (*Kernel, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("kernel: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("kernel: %w", err)
	}
	if st.IsDir() {
		return nil, fmt.Errorf("kernel %s: is a directory", path)
	}
	if st.Size() == 0 {
		return nil, fmt.Errorf("kernel %s: %w: the file is empty", path, ErrNotKernel)
	}
	var data []byte
	var unmap func() error
	if st.Mode().IsRegular() && st.Size() <= 1<<40 {
		data, err = unix.Mmap(int(f.Fd()), 0, int(st.Size()), unix.PROT_READ, unix.MAP_SHARED)
		if err == nil {
			m := data
			unmap = func() error { return unix.Munmap(m) }
		}
	}
	if data == nil { // not mappable (a pipe, say): read it
		if data, err = io.ReadAll(f); err != nil {
			return nil, fmt.Errorf("kernel: %w", err)
		}
	}
	k, err := ParseWith(data, o)
	if err != nil {
		if unmap != nil {
			unmap()
		}
		return nil, fmt.Errorf("kernel %s: %w", path, err)
	}
	if k.Format == FormatBzImageELF && k.Compression != CompressionNone && unmap != nil {
		unmap() // the segments are in the decompressed copy
		unmap = nil
	}
	k.unmap = unmap
	return k, nil
}

// Close releases the file mapping behind the segments; k cannot be loaded
// afterwards.
func (k *Kernel) Close() error {
	k.Segments = nil
	if k.unmap == nil {
		return nil
	}
	err := k.unmap()
	k.unmap = nil
	return err
}

// Parse recognises an ELF vmlinux or a bzImage, decompressing a bzImage's
// payload where it can. data must stay unchanged until Load: segments may
// alias it.
func Parse(data []byte) (*Kernel, error) { return ParseWith(data, Options{}) }

// ParseWith is Parse with options.
func ParseWith(data []byte, o Options) (*Kernel, error) {
	if len(data) >= 4 && bytes.Equal(data[:4], []byte("\x7fELF")) {
		return parseELF(data)
	}
	if len(data) >= 0x206 && binary.LittleEndian.Uint32(data[0x202:]) == HdrSMagic {
		return parseBzImage(data, o)
	}
	return nil, ErrNotKernel
}

// Load copies the segments into guest memory.
func (k *Kernel) Load(mem *guestmem.Memory) error {
	for _, s := range k.Segments {
		if err := mem.WriteAt(s.Data, s.Addr); err != nil {
			return fmt.Errorf("kernel segment at %#x: %w", s.Addr, err)
		}
		if bss := s.MemSize - uint64(len(s.Data)); bss > 0 {
			if err := mem.Fill(s.Addr+uint64(len(s.Data)), bss, 0); err != nil {
				return fmt.Errorf("kernel segment at %#x: %w", s.Addr, err)
			}
		}
	}
	return nil
}

// CheckFits reports whether the kernel lies in RAM below the 32-bit hole and
// above the boot structures.
func (k *Kernel) CheckFits(ram []addr.Range) error {
	top := layout.LowRAMTop(ram)
	if k.Start < layout.HighMemStart {
		return fmt.Errorf("kernel loads at %#x, below 1 MiB where the boot structures are", k.Start)
	}
	if k.End > top {
		return fmt.Errorf("kernel needs guest memory up to %d MiB but RAM below 4 GiB ends at %d MiB; increase --memory",
			(k.End+layout.MiB-1)/layout.MiB, top/layout.MiB)
	}
	return nil
}

// ELF constants.
const (
	elfHdrSize   = 64
	elfPhdrSize  = 56
	elfClass64   = 2
	elfDataLSB   = 1
	elfTypeExec  = 2
	elfTypeDyn   = 3
	elfMachineX8 = 62
	elfPTLoad    = 1
	elfMaxPhnum  = 0xffff - 1 // PN_XNUM means "count in section 0": not supported
)

func parseELF(data []byte) (*Kernel, error) {
	if len(data) < elfHdrSize {
		return nil, fmt.Errorf("%w: truncated ELF header", ErrNotKernel)
	}
	if data[4] != elfClass64 || data[5] != elfDataLSB {
		return nil, fmt.Errorf("%w: ELF is not 64-bit little-endian", ErrNotKernel)
	}
	le := binary.LittleEndian
	typ, machine := le.Uint16(data[16:]), le.Uint16(data[18:])
	if machine != elfMachineX8 {
		return nil, fmt.Errorf("%w: ELF machine %d is not x86-64", ErrNotKernel, machine)
	}
	if typ != elfTypeExec && typ != elfTypeDyn {
		return nil, fmt.Errorf("%w: ELF type %d is not an executable", ErrNotKernel, typ)
	}
	entry := le.Uint64(data[24:])
	phoff := le.Uint64(data[32:])
	phentsize, phnum := le.Uint16(data[54:]), le.Uint16(data[56:])
	if phentsize != elfPhdrSize {
		return nil, fmt.Errorf("%w: ELF program header size %d", ErrNotKernel, phentsize)
	}
	if phnum == 0 || phnum > elfMaxPhnum {
		return nil, fmt.Errorf("%w: ELF has %d program headers", ErrNotKernel, phnum)
	}
	if phoff > uint64(len(data)) || uint64(len(data))-phoff < uint64(phnum)*elfPhdrSize {
		return nil, fmt.Errorf("%w: ELF program headers lie outside the file", ErrNotKernel)
	}
	k := &Kernel{
		Format:        FormatELF,
		Entry:         entry,
		Start:         ^uint64(0),
		CmdlineMax:    layout.CmdlineMax - 1,
		InitrdAddrMax: 0x7fffffff, // what 64-bit kernels put in their header
	}
	entryOK := false
	for i := uint64(0); i < uint64(phnum); i++ {
		p := data[phoff+i*elfPhdrSize:]
		if le.Uint32(p[0:]) != elfPTLoad {
			continue
		}
		off, paddr := le.Uint64(p[8:]), le.Uint64(p[24:])
		filesz, memsz := le.Uint64(p[32:]), le.Uint64(p[40:])
		if filesz > memsz {
			return nil, fmt.Errorf("ELF segment %d: file size %#x exceeds memory size %#x", i, filesz, memsz)
		}
		if off > uint64(len(data)) || uint64(len(data))-off < filesz {
			return nil, fmt.Errorf("ELF segment %d: file data %#x+%#x lies outside the file (truncated?)", i, off, filesz)
		}
		if paddr+memsz < paddr || paddr+memsz > layout.LowRAMEnd {
			return nil, fmt.Errorf("ELF segment %d: physical range %#x+%#x is not below %#x", i, paddr, memsz, uint64(layout.LowRAMEnd))
		}
		k.Segments = append(k.Segments, Segment{Addr: paddr, Data: data[off : off+filesz], MemSize: memsz})
		k.Start = min(k.Start, paddr)
		k.End = max(k.End, paddr+memsz)
		if entry >= paddr && entry < paddr+memsz {
			entryOK = true
		}
	}
	if len(k.Segments) == 0 {
		return nil, fmt.Errorf("%w: ELF has no loadable segments", ErrNotKernel)
	}
	if !entryOK {
		return nil, fmt.Errorf("ELF entry point %#x is not inside a loaded segment (not a vmlinux with a physical entry?)", entry)
	}
	for i, a := range k.Segments {
		for _, b := range k.Segments[i+1:] {
			if a.Addr < b.Addr+b.MemSize && b.Addr < a.Addr+a.MemSize {
				return nil, fmt.Errorf("ELF segments at %#x and %#x overlap", a.Addr, b.Addr)
			}
		}
	}
	return k, nil
}

// Oldest boot protocol with xloadflags (and so a declared 64-bit entry).
const minBzImageVersion = 0x020c

func parseBzImage(data []byte, o Options) (*Kernel, error) {
	if len(data) < HdrEnd {
		return nil, fmt.Errorf("%w: bzImage setup header truncated", ErrNotKernel)
	}
	var h SetupHeader
	if err := binary.Read(bytes.NewReader(data[HdrOffset:HdrEnd]), binary.LittleEndian, &h); err != nil {
		return nil, fmt.Errorf("%w: bzImage header: %v", ErrNotKernel, err)
	}
	if h.BootFlag != BootFlagAA55 {
		return nil, fmt.Errorf("%w: bzImage boot flag %#x", ErrNotKernel, h.BootFlag)
	}
	if h.Version < minBzImageVersion {
		return nil, fmt.Errorf("bzImage boot protocol %d.%02d is too old: 2.12 or newer (a 64-bit entry) is needed",
			h.Version>>8, h.Version&0xff)
	}
	if h.Xloadflags&XLFKernel64 == 0 {
		return nil, fmt.Errorf("bzImage has no 64-bit entry point (xloadflags %#x): build a 64-bit kernel", h.Xloadflags)
	}
	if h.Loadflags&LoadedHigh == 0 {
		return nil, fmt.Errorf("bzImage is a zImage (not loaded high); not supported")
	}
	// The real-mode jump at 0x200 gives the header's length; keep only what
	// the image really has so older fields are not taken from its code.
	hdrLen := 0x202 + int(data[0x201]) - HdrOffset
	if hdrLen < 0x206-HdrOffset || HdrOffset+hdrLen > HdrEnd {
		hdrLen = HdrEnd - HdrOffset
	}
	if hdrLen < HdrEnd-HdrOffset {
		raw := make([]byte, HdrEnd-HdrOffset)
		copy(raw, data[HdrOffset:HdrOffset+hdrLen])
		h = SetupHeader{}
		_ = binary.Read(bytes.NewReader(raw), binary.LittleEndian, &h) // fixed size: cannot fail
	}
	setupSects := uint64(h.SetupSects)
	if setupSects == 0 {
		setupSects = 4
	}
	pmOff := (setupSects + 1) * 512
	if pmOff >= uint64(len(data)) {
		return nil, fmt.Errorf("bzImage truncated: no protected-mode kernel after %d setup sectors", setupSects)
	}
	payload := data[pmOff:]
	// pref_address is where the kernel was linked: a relocatable kernel
	// avoids relocating itself there, a fixed one must go there.
	load := uint64(layout.HighMemStart)
	if h.PrefAddress >= layout.HighMemStart && h.PrefAddress < layout.LowRAMEnd {
		load = h.PrefAddress
	}
	// The decompressor runs in place and then moves the kernel to the
	// next kernel_alignment boundary; init_size bytes from there must be RAM.
	size := max(uint64(len(payload)), uint64(h.InitSize))
	end := load + size
	if a := uint64(h.KernelAlignment); h.InitSize != 0 && h.RelocatableKernel != 0 && a != 0 && a&(a-1) == 0 && a <= layout.GiB {
		end = max(end, (load+a-1)&^(a-1)+uint64(h.InitSize))
	}
	if end > layout.LowRAMEnd {
		return nil, fmt.Errorf("bzImage needs %#x bytes at %#x, beyond RAM below 4 GiB", size, load)
	}
	cmax := layout.CmdlineMax - 1
	if h.CmdlineSize != 0 && int(h.CmdlineSize) < cmax {
		cmax = int(h.CmdlineSize)
	}
	initrdMax := uint64(h.InitrdAddrMax)
	if initrdMax == 0 {
		initrdMax = 0x37ffffff // boot.rst: before 2.03
	}
	k := &Kernel{
		Format:        FormatBzImage,
		Entry:         load + Entry64Offset,
		Segments:      []Segment{{Addr: load, Data: payload, MemSize: uint64(len(payload))}},
		Start:         load,
		End:           end,
		Hdr:           &h,
		CmdlineMax:    cmax,
		InitrdAddrMax: initrdMax,
	}
	if o.GuestDecompress {
		return k.guestEntered()
	}
	if h.PayloadLength == 0 {
		k.Note = "the bzImage's setup header does not say where its payload is (payload_length 0); " + guestDecompresses
		return k.guestEntered()
	}
	comp, err := bzImagePayload(data, &h, pmOff)
	if err != nil {
		return nil, err
	}
	k.Compression = PayloadFormat(comp)
	if o.HeaderOnly {
		return k, nil
	}
	k, err = hostDecompressed(k, comp, o.Limit)
	if err != nil || k.Format != FormatBzImage {
		return k, err
	}
	return k.guestEntered()
}

// guestEntered checks a bzImage that is entered at its 64-bit entry (the
// guest decompresses it): that entry, Entry64Offset into the
// protected-mode kernel, must be inside the image.
func (k *Kernel) guestEntered() (*Kernel, error) {
	if n := uint64(len(k.Segments[0].Data)); n <= Entry64Offset {
		return nil, fmt.Errorf("bzImage truncated: its protected-mode kernel has %d bytes, too few to hold the 64-bit entry at +%#x",
			n, Entry64Offset)
	}
	return k, nil
}

// hostDecompressed turns guest-path bzImage kernel k into the ELF inside
// its payload comp, or returns k with a Note when the payload cannot be
// decoded here.
//
// The ELF is loaded at its link (physical) addresses and entered at its
// e_entry, startup_64, as a vmlinux is (boot_params in RSI, identity
// paging): what the decompressor does before jumping there besides
// decompressing (choosing a random physical and virtual base and applying
// the relocations appended to the payload) is skipped, so KASLR is off.
// The zero page still gets the image's own setup header (Hdr), so the
// kernel reads its real version, cmdline_size, xloadflags and
// kernel_alignment; CmdlineMax and InitrdAddrMax come from it as for the
// guest path. init_size is the decompressor's need (payload, output and
// its heap); the kernel proper needs its ELF extent, _text to _end,
// which is what Start/End are.
const guestDecompresses = "the kernel decompresses itself in the guest (slowly where guest ring 0 is emulated)"

func hostDecompressed(k *Kernel, comp []byte, limit int) (*Kernel, error) {
	format, out, err := DecompressPayload(comp, limit)
	if err != nil {
		var pe *PayloadError
		if errors.As(err, &pe) && !pe.Fatal {
			k.Note = fmt.Sprintf("cannot decompress the bzImage's payload on the host (%v); %s", pe, guestDecompresses)
			return k, nil
		}
		return nil, fmt.Errorf("bzImage: %w", err)
	}
	e, err := parseELF(out)
	if err != nil {
		return nil, fmt.Errorf("bzImage: its %s payload decompressed to %d bytes that are not a loadable vmlinux: %w", format, len(out), err)
	}
	h := k.Hdr
	if a := uint64(h.KernelAlignment); h.RelocatableKernel != 0 && a != 0 && a&(a-1) == 0 && e.Start%a != 0 {
		k.Note = fmt.Sprintf("the ELF in the bzImage's %s payload loads at %#x, not aligned to its kernel_alignment %#x; %s",
			format, e.Start, a, guestDecompresses)
		return k, nil
	}
	e.Format = FormatBzImageELF
	e.Hdr = h
	e.CmdlineMax = k.CmdlineMax
	e.InitrdAddrMax = k.InitrdAddrMax
	e.Compression = format
	e.Decompressed = len(out)
	return e, nil
}
