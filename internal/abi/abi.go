// Package abi views fixed-layout structs shared with the kernel (ioctl
// arguments, VFIO region info) as the bytes the kernel reads and writes.
// Their sizes and offsets are checked with abitest.CheckLayout.
package abi

import "unsafe"

// Bytes views *p as its bytes (host endianness, which is what the kernel
// reads); writes to the slice change *p.
func Bytes[T any](p *T) []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(p)), unsafe.Sizeof(*p))
}

// From copies the leading bytes of b into a T (zero-filling if b is short).
func From[T any](b []byte) T {
	var v T
	copy(Bytes(&v), b)
	return v
}
