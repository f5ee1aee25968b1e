package boot

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"hash/crc64"
	"io"

	"github.com/ulikunitz/xz/lzma"
)

// The kernel's XZ payload (scripts/xz_wrap.sh) is one .xz stream whose
// block's filter chain is the x86 BCJ filter followed by LZMA2
// ("--x86 --lzma2=dict=32MiB", CRC32 check). github.com/ulikunitz/xz reads
// .xz streams with LZMA2 alone, so godvm walks the container itself (the
// .xz file format, version 1.0.4): the stream header, then each block's
// header, its LZMA2 data (decoded by ulikunitz/xz/lzma), the BCJ filter's
// inverse and the block's check, up to the index. The index and stream
// footer are not read: the payload's declared size is checked instead.

var xzMagic = []byte{0xfd, '7', 'z', 'X', 'Z', 0}

// .xz filter IDs godvm decodes.
const (
	xzFilterX86   = 0x04
	xzFilterLZMA2 = 0x21
)

var errXZUnsupported = errors.New("unsupported")

func unxz(p []byte, w *capWriter) error {
	le := binary.LittleEndian
	if len(p) < 12 || !bytes.Equal(p[:6], xzMagic) {
		return errors.New("xz: no stream header")
	}
	flags := p[6:8]
	if crc32.ChecksumIEEE(flags) != le.Uint32(p[8:12]) {
		return errors.New("xz: stream header CRC32 mismatch")
	}
	if flags[0] != 0 || flags[1]&0xf0 != 0 {
		return fmt.Errorf("xz: %w stream flags % x", errXZUnsupported, flags)
	}
	check := flags[1]
	checkSize := 0
	if check != 0 {
		checkSize = 4 << ((check - 1) / 3) // IDs 1-3: 4 bytes, 4-6: 8, 7-9: 16, 10-12: 32, 13-15: 64
	}
	pos := 12
	for block := 0; ; block++ {
		if pos >= len(p) {
			return errors.New("xz: truncated (no index)")
		}
		if p[pos] == 0 { // index indicator: no more blocks
			return nil
		}
		n, err := xzBlock(p[pos:], w, check, checkSize)
		if err != nil {
			return fmt.Errorf("xz: block %d: %w", block, err)
		}
		pos += n
	}
}

// xzFilter is one entry of a block's filter chain.
type xzFilter struct {
	id    uint64
	props []byte
}

// xzBlock decodes the block at the start of p and returns its size.
func xzBlock(p []byte, w *capWriter, check byte, checkSize int) (int, error) {
	le := binary.LittleEndian
	hsize := (int(p[0]) + 1) * 4
	if hsize > len(p) {
		return 0, io.ErrUnexpectedEOF
	}
	hdr := p[:hsize]
	if crc32.ChecksumIEEE(hdr[:hsize-4]) != le.Uint32(hdr[hsize-4:]) {
		return 0, errors.New("header CRC32 mismatch")
	}
	bf := hdr[1]
	if bf&0x3c != 0 {
		return 0, fmt.Errorf("%w block flags %#x", errXZUnsupported, bf)
	}
	body := hdr[2 : hsize-4]
	next := func() (uint64, error) {
		v, n := binary.Uvarint(body)
		if n <= 0 || n > 9 {
			return 0, errors.New("bad header field")
		}
		body = body[n:]
		return v, nil
	}
	csize, usize := int64(-1), int64(-1)
	if bf&0x40 != 0 {
		v, err := next()
		if err != nil || v == 0 || v > uint64(len(p)) {
			return 0, fmt.Errorf("compressed size %d with %d bytes left", v, len(p))
		}
		csize = int64(v)
	}
	if bf&0x80 != 0 {
		v, err := next()
		if err != nil || v > uint64(w.max) {
			return 0, fmt.Errorf("uncompressed size %d: %w", v, errOverDeclared)
		}
		usize = int64(v)
	}
	var chain []xzFilter
	for i := 0; i <= int(bf&3); i++ {
		id, err := next()
		if err != nil {
			return 0, err
		}
		n, err := next()
		if err != nil || n > uint64(len(body)) {
			return 0, errors.New("bad filter properties")
		}
		chain = append(chain, xzFilter{id, body[:n]})
		body = body[n:]
	}
	for _, b := range body {
		if b != 0 {
			return 0, errors.New("non-zero header padding")
		}
	}
	// The chain is listed in encoding order: LZMA2 last, optionally the
	// x86 BCJ filter before it.
	last := chain[len(chain)-1]
	if last.id != xzFilterLZMA2 || len(last.props) != 1 || last.props[0] > 40 {
		return 0, fmt.Errorf("%w filter chain (last filter %#x)", errXZUnsupported, last.id)
	}
	var bcjStart uint32
	useBCJ := false
	for _, f := range chain[:len(chain)-1] {
		switch {
		case f.id == xzFilterX86 && !useBCJ && (len(f.props) == 0 || len(f.props) == 4):
			useBCJ = true
			if len(f.props) == 4 {
				bcjStart = le.Uint32(f.props)
			}
		default:
			return 0, fmt.Errorf("%w filter %#x (godvm decodes x86 BCJ and LZMA2)", errXZUnsupported, f.id)
		}
	}
	dict := lzma2DictSize(last.props[0])
	dictCap := int(min(dict, uint64(max(w.max, lzma.MinDictCap))))

	data := p[hsize:]
	if csize >= 0 {
		if csize > int64(len(data)) {
			return 0, io.ErrUnexpectedEOF
		}
		data = data[:csize]
	}
	br := bytes.NewReader(data)
	r, err := lzma.Reader2Config{DictCap: dictCap}.NewReader2(br)
	if err != nil {
		return 0, err
	}
	start := len(w.b)
	if _, err := io.Copy(w, r); err != nil {
		return 0, err
	}
	consumed := len(data) - br.Len()
	if csize >= 0 && int64(consumed) != csize {
		return 0, fmt.Errorf("LZMA2 data is %d bytes, the header says %d", consumed, csize)
	}
	out := w.b[start:]
	if usize >= 0 && int64(len(out)) != usize {
		return 0, fmt.Errorf("decompressed to %d bytes, the header says %d", len(out), usize)
	}
	if useBCJ {
		bcjX86Decode(out, bcjStart)
	}
	pos := hsize + consumed
	pad := (4 - consumed%4) % 4
	if pos+pad+checkSize > len(p) {
		return 0, io.ErrUnexpectedEOF
	}
	for _, b := range p[pos : pos+pad] {
		if b != 0 {
			return 0, errors.New("non-zero block padding")
		}
	}
	pos += pad
	if err := xzCheck(check, out, p[pos:pos+checkSize]); err != nil {
		return 0, err
	}
	return pos + checkSize, nil
}

// lzma2DictSize decodes the LZMA2 filter's dictionary-size byte (<= 40).
func lzma2DictSize(b byte) uint64 {
	if b == 40 {
		return 1<<32 - 1
	}
	return uint64(2|b&1) << (b/2 + 11)
}

var crc64ECMA = crc64.MakeTable(crc64.ECMA)

// xzCheck verifies a block's check field over its decompressed data;
// check types godvm does not know are skipped (as xz itself allows).
func xzCheck(check byte, data, sum []byte) error {
	var h hash.Hash
	switch check {
	case 0:
		return nil
	case 1:
		h = crc32.NewIEEE()
	case 4:
		h = crc64.New(crc64ECMA)
	case 10:
		h = sha256.New()
	default:
		return nil
	}
	h.Write(data)
	got := h.Sum(nil)
	if check != 10 { // CRC32 and CRC64 are stored little endian
		for i, j := 0, len(got)-1; i < j; i, j = i+1, j-1 {
			got[i], got[j] = got[j], got[i]
		}
	}
	if !bytes.Equal(got, sum) {
		return fmt.Errorf("check mismatch (type %d): corrupt data", check)
	}
	return nil
}

// bcjX86Decode undoes the x86 BCJ filter in place: relative CALL/JMP
// targets (e8/e9 rel32) that the encoder made absolute are made relative
// again. start is the filter's start offset (0 unless its properties say).
// A port of xz-embedded's bcj_x86() (public domain) over the whole buffer
// at once; as there, the last 4 bytes are never converted.
func bcjX86Decode(buf []byte, start uint32) {
	if len(buf) <= 4 {
		return
	}
	maskAllowed := [8]bool{true, true, true, false, true, false, false, false}
	maskBitNum := [8]uint32{0, 1, 2, 2, 3, 3, 3, 3}
	msb := func(b byte) bool { return b == 0x00 || b == 0xff }
	le := binary.LittleEndian
	size := len(buf) - 4
	prevPos := -1
	var prevMask uint32
	for i := 0; i < size; i++ {
		if buf[i]&0xfe != 0xe8 {
			continue
		}
		if d := i - prevPos; d > 3 {
			prevMask = 0
		} else {
			prevMask = (prevMask << (d - 1)) & 7
			if prevMask != 0 {
				b := buf[i+4-int(maskBitNum[prevMask])]
				if !maskAllowed[prevMask] || msb(b) {
					prevPos = i
					prevMask = prevMask<<1 | 1
					continue
				}
			}
		}
		prevPos = i
		if !msb(buf[i+4]) {
			prevMask = prevMask<<1 | 1
			continue
		}
		src := le.Uint32(buf[i+1:])
		var dest uint32
		for {
			dest = src - (start + uint32(i) + 5)
			if prevMask == 0 {
				break
			}
			j := maskBitNum[prevMask] * 8
			if !msb(byte(dest >> (24 - j))) {
				break
			}
			src = dest ^ (1<<(32-j) - 1)
		}
		dest &= 0x01ffffff
		dest |= -(dest & 0x01000000)
		le.PutUint32(buf[i+1:], dest)
		i += 4
	}
}
