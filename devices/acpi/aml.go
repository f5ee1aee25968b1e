package acpi

// A minimal AML encoder: just the terms godvm's DSDT needs (names, scopes,
// devices, packages, integers, strings, buffers and resource templates).

import (
	"encoding/binary"
	"fmt"
	"strings"
)

// AML opcodes and prefixes.
const (
	amlZero       = 0x00
	amlOne        = 0x01
	amlName       = 0x08
	amlBytePrefix = 0x0a
	amlWordPrefix = 0x0b
	amlDWord      = 0x0c
	amlString     = 0x0d
	amlQWord      = 0x0e
	amlScope      = 0x10
	amlBuffer     = 0x11
	amlPackage    = 0x12
	amlExtOp      = 0x5b
	amlDevice     = 0x82 // after amlExtOp
	amlOnes       = 0xff
	amlRoot       = '\\'
	amlDualName   = 0x2e
	amlMultiName  = 0x2f
)

// pkgLength encodes a PkgLength for a body of n bytes (the encoding's own
// bytes are included in the value, as the spec requires).
func pkgLength(n int) []byte {
	if n+1 <= 0x3f {
		return []byte{byte(n + 1)}
	}
	for k := 1; k <= 3; k++ {
		total := n + 1 + k
		if total < 1<<(4+8*k) {
			b := make([]byte, 1+k)
			b[0] = byte(k<<6) | byte(total&0xf)
			for i := 1; i <= k; i++ {
				b[i] = byte(total >> (4 + 8*(i-1)))
			}
			return b
		}
	}
	panic(fmt.Sprintf("acpi: AML package of %d bytes", n)) // > 256 MiB: a programming error
}

// nameSeg pads a name segment to 4 characters with '_'.
func nameSeg(s string) []byte {
	if len(s) == 0 || len(s) > 4 {
		panic(fmt.Sprintf("acpi: bad AML name segment %q", s))
	}
	return []byte(s + strings.Repeat("_", 4-len(s)))
}

// nameString encodes a path such as "_SB.PCI0", "\\_S5" or "^FOO".
func nameString(path string) []byte {
	var out []byte
	for strings.HasPrefix(path, "\\") || strings.HasPrefix(path, "^") {
		out = append(out, path[0])
		path = path[1:]
	}
	if path == "" {
		return append(out, 0) // NullName
	}
	segs := strings.Split(path, ".")
	switch len(segs) {
	case 1:
	case 2:
		out = append(out, amlDualName)
	default:
		out = append(out, amlMultiName, byte(len(segs)))
	}
	for _, s := range segs {
		out = append(out, nameSeg(s)...)
	}
	return out
}

// amlInt encodes an integer with the shortest encoding.
func amlInt(v uint64) []byte {
	switch {
	case v == 0:
		return []byte{amlZero}
	case v == 1:
		return []byte{amlOne}
	case v == ^uint64(0):
		return []byte{amlOnes}
	case v <= 0xff:
		return []byte{amlBytePrefix, byte(v)}
	case v <= 0xffff:
		return binary.LittleEndian.AppendUint16([]byte{amlWordPrefix}, uint16(v))
	case v <= 0xffffffff:
		return binary.LittleEndian.AppendUint32([]byte{amlDWord}, uint32(v))
	}
	return binary.LittleEndian.AppendUint64([]byte{amlQWord}, v)
}

// amlString encodes an ASCII string constant.
func amlStr(s string) []byte {
	return append(append([]byte{amlString}, s...), 0)
}

// eisaID compresses a 7-character PNP ID ("PNP0A08") to its 32-bit form.
func eisaID(id string) uint32 {
	if len(id) != 7 {
		panic(fmt.Sprintf("acpi: bad EISA ID %q", id))
	}
	v := uint32(id[0]-0x40)<<26 | uint32(id[1]-0x40)<<21 | uint32(id[2]-0x40)<<16
	var prod uint32
	fmt.Sscanf(id[3:], "%04X", &prod)
	v |= prod
	// Stored byte-swapped.
	return v>>24 | v>>8&0xff00 | v<<8&0xff0000 | v<<24
}

// amlEISAID encodes EISAID("...") as iasl does (always a DWord).
func amlEISAID(id string) []byte {
	return binary.LittleEndian.AppendUint32([]byte{amlDWord}, eisaID(id))
}

func cat(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// amlNameObj is Name(path, obj).
func amlNameObj(path string, obj []byte) []byte {
	return cat([]byte{amlName}, nameString(path), obj)
}

// amlScopeObj is Scope(path) { terms }.
func amlScopeObj(path string, terms ...[]byte) []byte {
	body := cat(nameString(path), cat(terms...))
	return cat([]byte{amlScope}, pkgLength(len(body)), body)
}

// amlDeviceObj is Device(name) { terms }.
func amlDeviceObj(name string, terms ...[]byte) []byte {
	body := cat(nameString(name), cat(terms...))
	return cat([]byte{amlExtOp, amlDevice}, pkgLength(len(body)), body)
}

// amlPackageObj is Package() { elems }.
func amlPackageObj(elems ...[]byte) []byte {
	if len(elems) > 255 {
		panic("acpi: package too long")
	}
	body := cat([]byte{byte(len(elems))}, cat(elems...))
	return cat([]byte{amlPackage}, pkgLength(len(body)), body)
}

// amlBufferObj is Buffer() { data }.
func amlBufferObj(data []byte) []byte {
	body := cat(amlInt(uint64(len(data))), data)
	return cat([]byte{amlBuffer}, pkgLength(len(body)), body)
}

// resourceTemplate is ResourceTemplate() { descs }: a buffer of resource
// descriptors closed by an End Tag with checksum 0 ("valid").
func resourceTemplate(descs ...[]byte) []byte {
	return amlBufferObj(cat(cat(descs...), []byte{0x79, 0}))
}

// Resource descriptors (ACPI 6.x §6.4).

// resIO is IO(Decode16, min, max, align, len).
func resIO(min, max uint16, align, n uint8) []byte {
	b := []byte{0x47, 1}
	b = binary.LittleEndian.AppendUint16(b, min)
	b = binary.LittleEndian.AppendUint16(b, max)
	return append(b, align, n)
}

// resIRQNoFlags is IRQNoFlags() { irq }.
func resIRQNoFlags(irq uint8) []byte {
	return binary.LittleEndian.AppendUint16([]byte{0x22}, 1<<irq)
}

// resMemory32Fixed is Memory32Fixed(ReadWrite, base, len).
func resMemory32Fixed(base, n uint32) []byte {
	b := []byte{0x86, 9, 0, 1}
	b = binary.LittleEndian.AppendUint32(b, base)
	return binary.LittleEndian.AppendUint32(b, n)
}

// Address space resource types and flags.
const (
	resTypeMem = 0
	resTypeIO  = 1
	resTypeBus = 2
	// General flags of a producer window with fixed min and max.
	resFixedWindow = 0x0c
)

// resWordAddr is a Word Address Space descriptor (WordBusNumber, WordIO).
func resWordAddr(typ, typeFlags byte, min, max uint16) []byte {
	b := []byte{0x88, 13, 0, typ, resFixedWindow, typeFlags}
	for _, v := range []uint16{0, min, max, 0, max - min + 1} {
		b = binary.LittleEndian.AppendUint16(b, v)
	}
	return b
}

// resDWordMemory is DWordMemory(ResourceProducer, PosDecode, MinFixed,
// MaxFixed, NonCacheable, ReadWrite, 0, min, max, 0, len).
func resDWordMemory(min, max uint32) []byte {
	b := []byte{0x87, 23, 0, resTypeMem, resFixedWindow, 1}
	for _, v := range []uint32{0, min, max, 0, max - min + 1} {
		b = binary.LittleEndian.AppendUint32(b, v)
	}
	return b
}

// resQWordMemory is the 64-bit form of resDWordMemory.
func resQWordMemory(min, max uint64) []byte {
	b := []byte{0x8a, 43, 0, resTypeMem, resFixedWindow, 1}
	for _, v := range []uint64{0, min, max, 0, max - min + 1} {
		b = binary.LittleEndian.AppendUint64(b, v)
	}
	return b
}
