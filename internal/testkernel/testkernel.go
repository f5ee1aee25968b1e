// Package testkernel makes kernel files for tests that need something
// godvm's loader accepts without booting it (bad-input tests stop before
// /dev/kvm).
package testkernel

import "encoding/binary"

// TinyELF is a well-formed, vmlinux-shaped ELF64 x86-64 executable with one
// PT_LOAD segment of 16 bytes (4 KiB in memory) at 16 MiB, entered there.
func TinyELF() []byte {
	b := make([]byte, 64+56+16)
	copy(b, "\x7fELF\x02\x01\x01")
	le := binary.LittleEndian
	le.PutUint16(b[16:], 2)            // ET_EXEC
	le.PutUint16(b[18:], 62)           // EM_X86_64
	le.PutUint64(b[24:], 0x1000000)    // e_entry
	le.PutUint64(b[32:], 64)           // e_phoff
	le.PutUint16(b[54:], 56)           // e_phentsize
	le.PutUint16(b[56:], 1)            // e_phnum
	le.PutUint32(b[64:], 1)            // PT_LOAD
	le.PutUint64(b[64+8:], 120)        // p_offset
	le.PutUint64(b[64+24:], 0x1000000) // p_paddr
	le.PutUint64(b[64+32:], 16)        // p_filesz
	le.PutUint64(b[64+40:], 0x1000)    // p_memsz
	return b
}

// BzImage wraps payload as a bzImage's compressed kernel would be: four
// setup sectors with a 2.15 setup header (64-bit entry, loaded high,
// pref_address 16 MiB), then a protected-mode part as a real one is laid
// out: the 64-bit entry at +0x200 (here HLT; JMP back), the payload at
// payload_offset 0x240 and a few bytes after it. The payload is used as
// given (compress it, and append the decompressed size as the kernel's
// build does, for a loadable image).
func BzImage(payload []byte) []byte {
	const setupSects = 4
	const payloadOff = 0x240
	le := binary.LittleEndian
	b := make([]byte, (setupSects+1)*512+payloadOff, (setupSects+1)*512+payloadOff+len(payload)+16)
	b[0x1f1] = setupSects
	le.PutUint16(b[0x1fe:], 0xaa55)
	b[0x200], b[0x201] = 0xeb, 0x26c-0x202 // jmp over the header
	le.PutUint32(b[0x202:], 0x53726448)    // "HdrS"
	le.PutUint16(b[0x206:], 0x020f)        // protocol 2.15
	b[0x211] = 1                           // loadflags: LOADED_HIGH
	le.PutUint32(b[0x22c:], 0x7fffffff)    // initrd_addr_max
	le.PutUint32(b[0x230:], 0x200000)      // kernel_alignment
	le.PutUint16(b[0x236:], 1)             // xloadflags: XLF_KERNEL_64
	le.PutUint32(b[0x238:], 2047)          // cmdline_size
	le.PutUint32(b[0x248:], payloadOff)    // payload_offset
	le.PutUint32(b[0x24c:], uint32(len(payload)))
	le.PutUint64(b[0x258:], 0x1000000)                           // pref_address
	le.PutUint32(b[0x260:], 0x400000)                            // init_size
	copy(b[(setupSects+1)*512+0x200:], []byte{0xf4, 0xeb, 0xfd}) // startup_64: hlt; jmp .-1
	b = append(b, payload...)
	return append(b, make([]byte, 16)...)
}
