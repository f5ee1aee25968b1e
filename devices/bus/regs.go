package bus

// Register images: the one place where an access of any width (1, 2, 4 or
// 8 bytes; a 64-bit register written as two 32-bit halves; a 64-byte write
// that reached a device without Wide64) is split into, and merged back
// from, a device's registers. A device renders the registers an access can
// reach as little-endian bytes (an image that starts at base in its range),
// lets ReadRegs/WriteRegs copy the bytes the access overlaps, and asks
// Touches which registers a write covered.

// overlap is the part of [base, base+n) that the access [off, off+m) covers,
// as offsets into the image and into the access; ok is false when there is
// none (or the access wraps).
func overlap(base uint64, n int, off uint64, m int) (img, acc, length uint64, ok bool) {
	end, imgEnd := off+uint64(m), base+uint64(n)
	if end < off || imgEnd < base {
		return 0, 0, 0, false
	}
	lo, hi := max(base, off), min(imgEnd, end)
	if lo >= hi {
		return 0, 0, 0, false
	}
	return lo - base, lo - off, hi - lo, true
}

// ReadRegs copies into data the bytes of img (starting at base) that the
// read [off, off+len(data)) overlaps; data's other bytes are left as they
// are, so the caller fills them first (0 or 0xff, as the device answers
// unbacked bytes).
func ReadRegs(img []byte, base, off uint64, data []byte) {
	if i, a, n, ok := overlap(base, len(img), off, len(data)); ok {
		copy(data[a:a+n], img[i:i+n])
	}
}

// WriteRegs merges the bytes of the write [off, off+len(data)) that overlap
// img (starting at base) into img, and reports whether there were any.
func WriteRegs(img []byte, base, off uint64, data []byte) bool {
	i, a, n, ok := overlap(base, len(img), off, len(data))
	if ok {
		copy(img[i:i+n], data[a:a+n])
	}
	return ok
}

// Touches reports whether the access [off, off+n) covers any byte of the
// register [reg, reg+size).
func Touches(off uint64, n int, reg, size uint64) bool {
	_, _, _, ok := overlap(reg, int(size), off, n)
	return ok
}

// ReadDwords fills data, the read [off, off+len(data)), from the aligned
// 32-bit registers it overlaps, reading each once through reg (for a
// device whose registers are computed per dword rather than kept as an
// image; a 64-bit register is two dwords).
func ReadDwords(off uint64, data []byte, reg func(dw uint64) uint32) {
	end := off + uint64(len(data))
	for dw := off &^ 3; dw < end && dw >= off&^3; dw += 4 {
		v := reg(dw)
		img := [4]byte{byte(v), byte(v >> 8), byte(v >> 16), byte(v >> 24)}
		ReadRegs(img[:], dw, off, data)
	}
}

// WriteDwords splits the write [off, off+len(data)) into the aligned
// 32-bit registers it overlaps and hands each to reg with the written
// bytes in v and the bytes the write covers set in mask.
func WriteDwords(off uint64, data []byte, reg func(dw uint64, v, mask uint32)) {
	end := off + uint64(len(data))
	for dw := off &^ 3; dw < end && dw >= off&^3; dw += 4 {
		i, a, n, ok := overlap(dw, 4, off, len(data))
		if !ok {
			continue
		}
		var img [4]byte
		copy(img[i:i+n], data[a:a+n])
		v := uint32(img[0]) | uint32(img[1])<<8 | uint32(img[2])<<16 | uint32(img[3])<<24
		reg(dw, v, uint32((uint64(1)<<(8*n)-1)<<(8*i)))
	}
}
