package bench

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

// GuestRAMMapping is the name guest RAM's memfd mappings carry in
// /proc/PID/smaps (guestmem creates the memfd with this name).
const GuestRAMMapping = "/memfd:godvm-guest-ram"

// RSS is a process's resident memory split into guest RAM and the rest.
type RSS struct {
	TotalKB uint64 `json:"total_kb"`
	GuestKB uint64 `json:"guest_kb"` // mappings of guest RAM
	VMMKB   uint64 `json:"vmm_kb"`   // everything else: the VMM's own overhead
}

// ReadRSS reads /proc/PID/smaps (pid 0: this process).
func ReadRSS(pid int) (RSS, error) {
	p := "/proc/self/smaps"
	if pid > 0 {
		p = fmt.Sprintf("/proc/%d/smaps", pid)
	}
	f, err := os.Open(p)
	if err != nil {
		return RSS{}, err
	}
	defer f.Close()
	return ParseSmaps(f)
}

// ParseSmaps sums Rss: lines per mapping, counting mappings whose path is
// guest RAM separately.
func ParseSmaps(r io.Reader) (RSS, error) {
	var out RSS
	guest := false
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		line := sc.Text()
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		if isMappingHeader(fields) {
			path := ""
			if len(fields) >= 6 {
				path = strings.Join(fields[5:], " ")
			}
			guest = strings.HasPrefix(path, GuestRAMMapping)
			continue
		}
		if fields[0] == "Rss:" && len(fields) >= 2 {
			kb, err := strconv.ParseUint(fields[1], 10, 64)
			if err != nil {
				return RSS{}, fmt.Errorf("smaps: bad Rss line %q", line)
			}
			out.TotalKB += kb
			if guest {
				out.GuestKB += kb
			} else {
				out.VMMKB += kb
			}
		}
	}
	return out, sc.Err()
}

// A mapping header looks like "7f..-7f.. rw-p 00000000 00:05 1234  /path".
func isMappingHeader(f []string) bool {
	if len(f) < 5 {
		return false
	}
	a, b, ok := strings.Cut(f[0], "-")
	if !ok || a == "" || b == "" {
		return false
	}
	for _, s := range []string{a, b} {
		if _, err := strconv.ParseUint(s, 16, 64); err != nil {
			return false
		}
	}
	return len(f[1]) == 4
}
