// Package kernelcache finds the guest test kernel that images/build-kernel.sh
// (`make kernel`) built, so that `godvm bench` and the e2e tests boot the
// same kernel without being told where it is.
//
// The rule, first match wins:
//
//  1. an explicit path (a command-line flag): that vmlinux;
//  2. $GODVM_TEST_KERNEL: that vmlinux;
//  3. $CACHE/kernel-current, the link build-kernel.sh points at the kernel
//     it built or found last ($CACHE is $GODVM_CACHE, else ~/.cache/godvm);
//  4. the newest complete $CACHE/kernel-<hash> directory (one with the
//     .complete marker build-kernel.sh writes last), by that marker's
//     modification time: for caches filled before the link existed.
//
// A path given in 1 or 2 that does not exist is an error: it never falls
// through to the cache. bzImage and System.map are looked up next to the
// vmlinux; either may be absent.
package kernelcache

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

const (
	// EnvKernel names a vmlinux explicitly.
	EnvKernel = "GODVM_TEST_KERNEL"
	// EnvCache overrides the cache directory, as for images/build-kernel.sh.
	EnvCache = "GODVM_CACHE"
	// Current is the link build-kernel.sh updates after each build or cache hit.
	Current = "kernel-current"
	// Complete marks a finished kernel directory.
	Complete = ".complete"
)

// How the kernel was found.
const (
	FromFlag    = "explicit path"
	FromEnv     = "$" + EnvKernel
	FromCurrent = Current + " link"
	FromNewest  = "newest complete kernel-<hash> directory"
)

// Kernel is a test kernel's files. An absent file is "".
type Kernel struct {
	Vmlinux   string
	BzImage   string
	SystemMap string
	Dir       string // the directory holding them
	Source    string // how it was found: FromFlag, FromEnv, FromCurrent or FromNewest
}

// Missing names the files of the kernel that are absent.
func (k Kernel) Missing() []string {
	var m []string
	for _, f := range []struct{ name, path string }{{"vmlinux", k.Vmlinux}, {"bzImage", k.BzImage}, {"System.map", k.SystemMap}} {
		if f.path == "" {
			m = append(m, f.name)
		}
	}
	return m
}

// String says which kernel and how it was found, in one line.
func (k Kernel) String() string {
	s := k.Vmlinux
	if s == "" {
		s = k.Dir
	}
	s += " (" + k.Source
	if m := k.Missing(); len(m) > 0 {
		s += "; no " + strings.Join(m, ", no ")
	}
	return s + ")"
}

// CacheDir returns $GODVM_CACHE, else ~/.cache/godvm.
func CacheDir() (string, error) {
	if d := os.Getenv(EnvCache); d != "" {
		return d, nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("no cache directory (set %s): %v", EnvCache, err)
	}
	return filepath.Join(home, ".cache", "godvm"), nil
}

// Find returns the test kernel by the package's rule; explicit is the
// flag's value ("" when not given).
func Find(explicit string) (Kernel, error) {
	if explicit != "" {
		return fromVmlinux(explicit, FromFlag)
	}
	if p := os.Getenv(EnvKernel); p != "" {
		k, err := fromVmlinux(p, FromEnv)
		if err != nil {
			return k, fmt.Errorf("%s: %v", EnvKernel, err)
		}
		return k, nil
	}
	cache, err := CacheDir()
	if err != nil {
		return Kernel{}, err
	}
	return FindIn(cache)
}

// FindIn applies rules 3 and 4 to one cache directory.
func FindIn(cache string) (Kernel, error) {
	cur := filepath.Join(cache, Current)
	if fi, err := os.Stat(cur); err == nil && fi.IsDir() {
		if !exists(filepath.Join(cur, Complete)) {
			return Kernel{}, fmt.Errorf("%s points at an incomplete build (no %s): run `make kernel`", cur, Complete)
		}
		// The link's target, so that the path names the build (its hash).
		dir := cur
		if t, err := filepath.EvalSymlinks(cur); err == nil {
			dir = t
		}
		return fromDir(dir, FromCurrent), nil
	} else if _, lerr := os.Lstat(cur); lerr == nil {
		return Kernel{}, fmt.Errorf("%s is a dangling link (%v): run `make kernel`", cur, err)
	}
	dir, err := newestComplete(cache)
	if err != nil {
		return Kernel{}, err
	}
	return fromDir(dir, FromNewest), nil
}

// kernelDir matches build-kernel.sh's output directories (16 hex digits),
// not its logs, locks, build trees or temporaries.
var kernelDir = regexp.MustCompile(`^kernel-[0-9a-f]{16}$`)

func newestComplete(cache string) (string, error) {
	ents, err := os.ReadDir(cache)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("reading the kernel cache: %v", err)
	}
	var best string
	var bestT time.Time
	for _, e := range ents {
		if !e.IsDir() || !kernelDir.MatchString(e.Name()) {
			continue
		}
		fi, err := os.Stat(filepath.Join(cache, e.Name(), Complete))
		if err != nil {
			continue
		}
		// Ties (same mtime) go to the later name, so the choice is stable.
		if best == "" || fi.ModTime().After(bestT) || (fi.ModTime().Equal(bestT) && e.Name() > filepath.Base(best)) {
			best, bestT = filepath.Join(cache, e.Name()), fi.ModTime()
		}
	}
	if best == "" {
		return "", fmt.Errorf("no test kernel: none in %s (no %s link, no complete kernel-<hash> directory) and %s is not set; `make kernel` builds it", cache, Current, EnvKernel)
	}
	return best, nil
}

func fromDir(dir, source string) Kernel {
	k := Kernel{Dir: dir, Source: source}
	k.Vmlinux = ifExists(filepath.Join(dir, "vmlinux"))
	k.BzImage = ifExists(filepath.Join(dir, "bzImage"))
	k.SystemMap = ifExists(filepath.Join(dir, "System.map"))
	return k
}

func fromVmlinux(p, source string) (Kernel, error) {
	fi, err := os.Stat(p)
	if err != nil {
		return Kernel{}, err
	}
	if fi.IsDir() {
		return Kernel{}, fmt.Errorf("%s is a directory, not a kernel", p)
	}
	k := fromDir(filepath.Dir(p), source)
	k.Vmlinux = p
	return k, nil
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func ifExists(p string) string {
	if exists(p) {
		return p
	}
	return ""
}
