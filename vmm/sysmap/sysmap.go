// Package sysmap resolves guest kernel addresses to symbols with a System.map
// file ("ffffffff81000000 T _text" lines), for reports such as "the guest
// stopped at RIP ... (default_idle+0x12)".
package sysmap

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
)

// kernelMap is __START_KERNEL_map: the kernel text's virtual base, which the
// early boot code runs below at its physical address.
const kernelMap = 0xffffffff80000000

type sym struct {
	addr uint64
	name string
}

// Map is a sorted symbol table.
type Map struct {
	syms []sym
}

// Load reads a System.map file.
func Load(path string) (*Map, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("system map: %w", err)
	}
	defer f.Close()
	m, err := Parse(f)
	if err != nil {
		return nil, fmt.Errorf("system map %s: %w", path, err)
	}
	return m, nil
}

// Parse reads System.map lines; lines that do not parse are skipped, but a
// file without a single symbol is an error.
func Parse(r io.Reader) (*Map, error) {
	m := &Map{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 3 || len(f[1]) != 1 {
			continue
		}
		switch f[1][0] {
		case 't', 'T', 'w', 'W':
		default:
			continue // only code symbols are useful for RIP
		}
		a, err := strconv.ParseUint(f[0], 16, 64)
		if err != nil {
			continue
		}
		m.syms = append(m.syms, sym{a, f[2]})
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(m.syms) == 0 {
		return nil, fmt.Errorf("no text symbols (is this a System.map?)")
	}
	sort.SliceStable(m.syms, func(i, j int) bool { return m.syms[i].addr < m.syms[j].addr })
	return m, nil
}

// maxOffset bounds how far past a symbol an address may lie and still be
// attributed to it.
const maxOffset = 1 << 20

// Lookup returns "name+0xoff" for addr, trying the kernel-map alias of a
// physical address too; ok is false when no symbol covers it.
func (m *Map) Lookup(addr uint64) (string, bool) {
	if m == nil {
		return "", false
	}
	if s, ok := m.lookup(addr); ok {
		return s, true
	}
	if addr < 1<<30 {
		return m.lookup(addr + kernelMap)
	}
	return "", false
}

func (m *Map) lookup(addr uint64) (string, bool) {
	i := sort.Search(len(m.syms), func(i int) bool { return m.syms[i].addr > addr }) - 1
	if i < 0 || i == len(m.syms)-1 || addr-m.syms[i].addr > maxOffset {
		// past the last symbol (usually _etext or similar): unknown
		return "", false
	}
	s := m.syms[i]
	if addr == s.addr {
		return s.name, true
	}
	return fmt.Sprintf("%s+%#x", s.name, addr-s.addr), true
}
