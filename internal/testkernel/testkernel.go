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
