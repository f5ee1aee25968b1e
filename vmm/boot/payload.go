package boot

import (
	"bytes"
	"compress/bzip2"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
	"github.com/ulikunitz/xz/lzma"
)

// A bzImage's protected-mode part is the kernel's own decompressor with the
// real kernel (vmlinux.bin: the vmlinux ELF, stripped, sometimes followed by
// its relocation table) embedded as a compressed payload. payload_offset
// (from the start of the protected-mode part) and payload_length say where
// it is (boot protocol 2.08+); its magic bytes say how it is compressed
// (CONFIG_KERNEL_*); its last 4 bytes are the decompressed size, little
// endian (the build's size_append, or gzip's own ISIZE; the decompressor's
// mkpiggy reads them the same way for every format).
//
// godvm decompresses the payload on the host and loads the ELF at its link
// address, exactly as it loads a vmlinux: where guest ring 0 runs in KVM's
// instruction emulator (kvm_pvm), the kernel's own decompressor costs
// tens of seconds (LZ4) to many minutes (XZ).

// Payload compression formats, named as the kernel's CONFIG_KERNEL_* are.
const (
	CompressionNone  = "none" // CONFIG_KERNEL_UNCOMPRESSED: the payload is the ELF
	CompressionGzip  = "gzip"
	CompressionBzip2 = "bzip2"
	CompressionLZMA  = "lzma"
	CompressionXZ    = "xz"
	CompressionLZO   = "lzo"
	CompressionLZ4   = "lz4"
	CompressionZstd  = "zstd"
)

// MaxDecompressed is the largest decompressed payload godvm accepts (a
// distribution kernel's is 60-70 MiB). A payload that declares more, or
// that decompresses to more than it declares, is refused before memory is
// spent on it.
const MaxDecompressed = 1 << 30

// payloadMagic maps leading bytes to a format (lib/decompress.c's table,
// plus the ELF magic of an uncompressed payload).
var payloadMagic = []struct {
	magic  string
	format string
}{
	{"\x1f\x8b", CompressionGzip},
	{"BZh", CompressionBzip2},
	{"\x5d\x00\x00", CompressionLZMA},
	{"\xfd7zXZ\x00", CompressionXZ},
	{"\x89LZO", CompressionLZO},
	{"\x02\x21\x4c\x18", CompressionLZ4},
	{"\x28\xb5\x2f\xfd", CompressionZstd},
	{"\x7fELF", CompressionNone},
}

// PayloadFormat names a payload's compression from its first bytes ("" if
// none matches).
func PayloadFormat(p []byte) string {
	for _, m := range payloadMagic {
		if bytes.HasPrefix(p, []byte(m.magic)) {
			return m.format
		}
	}
	return ""
}

// bzImagePayload returns the payload of a bzImage whose protected-mode part
// starts at pmOff.
func bzImagePayload(data []byte, h *SetupHeader, pmOff uint64) ([]byte, error) {
	off, n := uint64(h.PayloadOffset), uint64(h.PayloadLength)
	end := pmOff + off + n // each term < 2^32: no overflow
	if end > uint64(len(data)) {
		return nil, fmt.Errorf("bzImage payload at %#x+%#x (payload_offset %#x) lies beyond the end of the file (%#x bytes): truncated?",
			pmOff+off, n, off, len(data))
	}
	return data[pmOff+off : end], nil
}

// PayloadError says why a payload was not decompressed on the host.
// Fatal errors are bad input (a decompression bomb); the others (an
// unknown format, a stream godvm's decoders reject) leave the bzImage to
// decompress itself in the guest.
type PayloadError struct {
	Format string // "" when not recognised
	Fatal  bool
	Err    error
}

func (e *PayloadError) Error() string {
	if e.Format == "" {
		return e.Err.Error()
	}
	return e.Format + " payload: " + e.Err.Error()
}

func (e *PayloadError) Unwrap() error { return e.Err }

// errOverDeclared stops a decoder that produces more than the payload's
// declared size.
var errOverDeclared = errors.New("decompresses to more than the size its last 4 bytes declare")

// capWriter collects output up to max bytes.
type capWriter struct {
	b   []byte
	max int
}

func (w *capWriter) Write(p []byte) (int, error) {
	if len(p) > w.max-len(w.b) {
		return 0, errOverDeclared
	}
	w.b = append(w.b, p...)
	return len(p), nil
}

// DecompressPayload decompresses a bzImage payload, refusing to produce
// more than limit bytes (0: MaxDecompressed). It returns the format and
// the decompressed bytes; an uncompressed (ELF) payload is returned as it
// is. Errors are *PayloadError.
func DecompressPayload(p []byte, limit int) (format string, out []byte, err error) {
	if limit <= 0 {
		limit = MaxDecompressed
	}
	format = PayloadFormat(p)
	fail := func(fatal bool, f string, a ...any) (string, []byte, error) {
		return format, nil, &PayloadError{Format: format, Fatal: fatal, Err: fmt.Errorf(f, a...)}
	}
	switch format {
	case "":
		n := min(len(p), 8)
		return fail(false, "unknown compression (payload starts % x)", p[:n])
	case CompressionNone:
		return format, p, nil
	case CompressionLZO:
		return fail(false, "godvm has no LZO decoder")
	}
	if len(p) < 8 {
		return fail(false, "truncated (%d bytes)", len(p))
	}
	declared := uint64(binary.LittleEndian.Uint32(p[len(p)-4:]))
	if declared == 0 {
		return fail(false, "declares a decompressed size of 0")
	}
	if declared > uint64(limit) {
		return fail(true, "declares %d MiB decompressed, more than godvm's limit of %d MiB",
			(declared+1<<20-1)>>20, limit>>20)
	}
	w := &capWriter{max: int(declared), b: make([]byte, 0, min(int(declared), 64*len(p)+4096))}
	// Every format but gzip (whose member ends with the size) has the
	// 4 size bytes appended after its stream.
	body := p[:len(p)-4]
	switch format {
	case CompressionGzip:
		err = gunzip(p, w)
	case CompressionBzip2:
		_, err = io.Copy(w, bzip2.NewReader(bytes.NewReader(body)))
	case CompressionLZMA:
		err = unlzma(body, w)
	case CompressionXZ:
		err = unxz(body, w)
	case CompressionLZ4:
		err = unlz4Legacy(body, w)
	case CompressionZstd:
		err = unzstd(body, w, limit)
	}
	if err != nil {
		return fail(false, "%v", err)
	}
	if uint64(len(w.b)) != declared {
		return fail(false, "decompressed to %d bytes, not the %d its last 4 bytes declare", len(w.b), declared)
	}
	return format, w.b, nil
}

func gunzip(p []byte, w io.Writer) error {
	zr, err := gzip.NewReader(bytes.NewReader(p))
	if err != nil {
		return err
	}
	zr.Multistream(false)
	_, err = io.Copy(w, zr) // checks the member's CRC32 and size at its end
	return err
}

// unlzma decodes a .lzma ("LZMA alone") stream: 13-byte header
// (properties, dictionary size, decompressed size or -1), then the data,
// ended by its size or an end marker. The dictionary is capped at the
// output size: a larger one cannot be referenced and would only cost
// memory (the kernel's lzma -9 says 64 MiB).
func unlzma(p []byte, w *capWriter) error {
	if len(p) < lzma.HeaderLen {
		return io.ErrUnexpectedEOF
	}
	hdr := bytes.Clone(p[:lzma.HeaderLen])
	dict := binary.LittleEndian.Uint32(hdr[1:])
	capDict := uint32(max(w.max, lzma.MinDictCap))
	if dict > capDict {
		binary.LittleEndian.PutUint32(hdr[1:], capDict)
		dict = capDict
	}
	r, err := lzma.ReaderConfig{DictCap: int(max(dict, lzma.MinDictCap))}.NewReader(
		io.MultiReader(bytes.NewReader(hdr), bytes.NewReader(p[lzma.HeaderLen:])))
	if err != nil {
		return err
	}
	_, err = io.Copy(w, r)
	return err
}

// unzstd decodes zstd frames; the window (the decoder's history memory)
// is bounded by limit.
func unzstd(p []byte, w io.Writer, limit int) error {
	d, err := zstd.NewReader(bytes.NewReader(p), zstd.WithDecoderConcurrency(1),
		zstd.WithDecoderMaxWindow(uint64(max(limit, zstd.MinWindowSize))), zstd.WithDecoderMaxMemory(uint64(limit)))
	if err != nil {
		return err
	}
	defer d.Close()
	_, err = io.Copy(w, d)
	return err
}

// The kernel's LZ4 is the legacy frame (lz4 -l): the magic 02 21 4c 18,
// then blocks of at most 8 MiB decompressed, each preceded by its
// compressed size (LE32); a repeated magic starts a concatenated frame
// (lib/decompress_unlz4.c).
const (
	lz4LegacyMagic = 0x184c2102
	lz4LegacyChunk = 8 << 20
)

func unlz4Legacy(p []byte, w *capWriter) error {
	le := binary.LittleEndian
	if len(p) < 4 || le.Uint32(p) != lz4LegacyMagic {
		return errors.New("not an LZ4 legacy frame")
	}
	p = p[4:]
	buf := make([]byte, min(lz4LegacyChunk, w.max))
	for len(p) > 0 {
		if len(p) < 4 {
			return fmt.Errorf("%d stray bytes after the last block", len(p))
		}
		n := le.Uint32(p)
		p = p[4:]
		if n == lz4LegacyMagic {
			continue
		}
		if n == 0 || uint64(n) > uint64(len(p)) || int(n) > lz4.CompressBlockBound(lz4LegacyChunk) {
			return fmt.Errorf("block of %d bytes with %d left (truncated or corrupt)", n, len(p))
		}
		// buf is smaller than a chunk only when the declared size is:
		// a block that does not fit is corrupt or over the declared size.
		m, err := lz4.UncompressBlock(p[:n], buf)
		if err != nil {
			return fmt.Errorf("block at %d bytes from the end: %w", len(p)+4, err)
		}
		if _, err := w.Write(buf[:m]); err != nil {
			return err
		}
		p = p[n:]
	}
	return nil
}
