package kernelcache

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// build makes a kernel-<hash> directory as images/build-kernel.sh leaves it:
// the files named, then .complete (when complete) with modification time at.
func build(t *testing.T, cache, hash string, complete bool, at time.Time, files ...string) string {
	t.Helper()
	dir := filepath.Join(cache, "kernel-"+hash)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if err := os.WriteFile(filepath.Join(dir, f), []byte(f), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if complete {
		c := filepath.Join(dir, Complete)
		if err := os.WriteFile(c, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(c, at, at); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// isolate points the package at an empty cache with no GODVM_TEST_KERNEL.
func isolate(t *testing.T) string {
	t.Helper()
	cache := t.TempDir()
	t.Setenv(EnvCache, cache)
	t.Setenv(EnvKernel, "")
	return cache
}

var all = []string{"vmlinux", "bzImage", "System.map"}

const (
	hashA = "0123456789abcdef"
	hashB = "fedcba9876543210"
	hashC = "00000000000000aa"
)

func TestNewestCompleteWithoutLink(t *testing.T) {
	cache := isolate(t)
	t0 := time.Now().Add(-time.Hour)
	build(t, cache, hashA, true, t0, all...)
	newer := build(t, cache, hashB, true, t0.Add(time.Minute), all...)
	// Newer still, but incomplete (a build in progress or one that failed),
	// and things in the cache that are not kernel directories.
	build(t, cache, hashC, false, time.Time{}, all...)
	build(t, cache, hashA+".tmp", true, t0.Add(time.Hour), all...)
	os.WriteFile(filepath.Join(cache, "kernel-"+hashC+".log"), nil, 0o644)
	os.MkdirAll(filepath.Join(cache, "build-"+hashC, "linux"), 0o755)

	k, err := Find("")
	if err != nil {
		t.Fatal(err)
	}
	want := Kernel{Dir: newer, Source: FromNewest, Vmlinux: filepath.Join(newer, "vmlinux"),
		BzImage: filepath.Join(newer, "bzImage"), SystemMap: filepath.Join(newer, "System.map")}
	if k != want {
		t.Fatalf("got %+v\nwant %+v", k, want)
	}
	if len(k.Missing()) != 0 {
		t.Errorf("missing %v", k.Missing())
	}
}

func TestCurrentLinkWins(t *testing.T) {
	cache := isolate(t)
	t0 := time.Now().Add(-time.Hour)
	older := build(t, cache, hashA, true, t0, "vmlinux", "System.map")
	build(t, cache, hashB, true, t0.Add(time.Minute), all...)
	// The link names the older build: it was the last one build-kernel.sh
	// built or found (e.g. after switching back to an earlier agent).
	if err := os.Symlink("kernel-"+hashA, filepath.Join(cache, Current)); err != nil {
		t.Fatal(err)
	}
	k, err := Find("")
	if err != nil {
		t.Fatal(err)
	}
	if k.Dir != older || k.Source != FromCurrent || k.Vmlinux != filepath.Join(older, "vmlinux") {
		t.Fatalf("got %+v, want the linked %s", k, older)
	}
	if k.BzImage != "" || !reflect.DeepEqual(k.Missing(), []string{"bzImage"}) {
		t.Errorf("bzImage %q, missing %v: want it reported absent", k.BzImage, k.Missing())
	}
	if s := k.String(); !strings.Contains(s, "no bzImage") || !strings.Contains(s, older) {
		t.Errorf("String() = %q", s)
	}
}

func TestCurrentLinkBroken(t *testing.T) {
	cache := isolate(t)
	build(t, cache, hashB, true, time.Now(), all...)
	// An incomplete target and a dangling link are errors, not silently
	// some other kernel: the link says which build is wanted.
	build(t, cache, hashA, false, time.Time{}, "vmlinux")
	link := filepath.Join(cache, Current)
	os.Symlink("kernel-"+hashA, link)
	if _, err := Find(""); err == nil || !strings.Contains(err.Error(), "incomplete") || !strings.Contains(err.Error(), "make kernel") {
		t.Errorf("incomplete target: %v", err)
	}
	os.Remove(link)
	os.Symlink("kernel-"+hashC, link)
	if _, err := Find(""); err == nil || !strings.Contains(err.Error(), "dangling") {
		t.Errorf("dangling link: %v", err)
	}
}

func TestEnvAndFlag(t *testing.T) {
	cache := isolate(t)
	build(t, cache, hashB, true, time.Now(), all...)
	os.Symlink("kernel-"+hashB, filepath.Join(cache, Current))
	other := t.TempDir()
	vm := filepath.Join(other, "my-vmlinux")
	os.WriteFile(vm, []byte("elf"), 0o644)
	os.WriteFile(filepath.Join(other, "bzImage"), nil, 0o644)

	t.Setenv(EnvKernel, vm)
	k, err := Find("")
	if err != nil {
		t.Fatal(err)
	}
	want := Kernel{Dir: other, Source: FromEnv, Vmlinux: vm, BzImage: filepath.Join(other, "bzImage")}
	if k != want {
		t.Fatalf("env: got %+v\nwant %+v", k, want)
	}

	// The flag wins over the environment.
	flagVM := filepath.Join(cache, "kernel-"+hashB, "vmlinux")
	if k, err := Find(flagVM); err != nil || k.Vmlinux != flagVM || k.Source != FromFlag || k.SystemMap == "" {
		t.Fatalf("flag: %+v %v", k, err)
	}

	// Paths that are given but absent are errors; they never fall back to
	// the cache.
	t.Setenv(EnvKernel, filepath.Join(other, "nope"))
	if _, err := Find(""); err == nil || !strings.Contains(err.Error(), EnvKernel) || !strings.Contains(err.Error(), "nope") {
		t.Errorf("missing env kernel: %v", err)
	}
	if _, err := Find(filepath.Join(other, "gone")); err == nil || !strings.Contains(err.Error(), "gone") {
		t.Errorf("missing flag kernel: %v", err)
	}
	if _, err := Find(other); err == nil || !strings.Contains(err.Error(), "directory") {
		t.Errorf("directory as kernel: %v", err)
	}
}

func TestNothingFound(t *testing.T) {
	for name, setup := range map[string]func(cache string){
		"empty cache":   func(string) {},
		"no cache dir":  func(cache string) { os.Remove(cache) },
		"only partials": func(cache string) { build(t, cache, hashA, false, time.Time{}, all...) },
	} {
		t.Run(name, func(t *testing.T) {
			cache := isolate(t)
			setup(cache)
			k, err := Find("")
			if err == nil {
				t.Fatalf("found %+v", k)
			}
			for _, w := range []string{"no test kernel", "make kernel", cache, EnvKernel} {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

func TestCacheDir(t *testing.T) {
	t.Setenv(EnvCache, "/some/cache")
	if d, err := CacheDir(); err != nil || d != "/some/cache" {
		t.Errorf("%s set: %q %v", EnvCache, d, err)
	}
	t.Setenv(EnvCache, "")
	t.Setenv("HOME", "/home/u")
	if d, err := CacheDir(); err != nil || d != "/home/u/.cache/godvm" {
		t.Errorf("default: %q %v", d, err)
	}
}

// The link images/build-kernel.sh writes is what FindIn follows: run the
// script's own point_current on a temp cache, so the two cannot drift apart.
func TestBuildScriptLink(t *testing.T) {
	script, err := filepath.Abs("../../images/build-kernel.sh")
	if err != nil {
		t.Fatal(err)
	}
	src, err := os.ReadFile(script)
	if err != nil {
		t.Fatal(err)
	}
	fn := extractFunc(t, string(src), "point_current")
	cache := isolate(t)
	dir := build(t, cache, hashA, true, time.Now(), all...)
	build(t, cache, hashB, true, time.Now().Add(time.Hour), all...)
	// As in the script: cache, hash and say are defined when finish runs.
	sh := "set -euo pipefail\nsay() { echo \"$*\" >&2; }\ncache=" + shQuote(cache) + "\nhash=" + hashA + "\n" + fn + "\npoint_current\npoint_current\n"
	runBash(t, sh)
	k, err := FindIn(cache)
	if err != nil {
		t.Fatal(err)
	}
	if k.Dir != dir || k.Source != FromCurrent {
		t.Fatalf("after point_current: %+v, want %s by the link", k, dir)
	}
	ents, _ := os.ReadDir(cache)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".kernel-current") {
			t.Errorf("temporary %s left behind", e.Name())
		}
	}
}
