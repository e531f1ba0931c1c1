package main

import (
	"os"
	"path/filepath"
	"runtime/debug"
	"testing"
)

func TestContainerMemoryReadsTheCgroupLimit(t *testing.T) {
	dir := t.TempDir()
	limited, unlimited := filepath.Join(dir, "limited"), filepath.Join(dir, "unlimited")
	if err := os.WriteFile(limited, []byte("536870912\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(unlimited, []byte("max\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if limit, ok := containerMemory(limited); !ok || limit != 512<<20 {
		t.Errorf("limited: %d, %v", limit, ok)
	}
	for _, path := range []string{unlimited, filepath.Join(dir, "absent")} {
		if _, ok := containerMemory(path); ok {
			t.Errorf("%s: a limit where there is none", path)
		}
	}
}

func TestGarbageCollectionFollowsTheContainerUnlessTheEnvironmentSaysOtherwise(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(-1))
	limited := filepath.Join(t.TempDir(), "memory.max")
	if err := os.WriteFile(limited, []byte("1073741824"), 0o644); err != nil {
		t.Fatal(err)
	}
	none := func(string) string { return "" }
	collectGarbage(none, limited)
	if got := debug.SetGCPercent(100); got != gcPercent {
		t.Errorf("GOGC %d, want %d", got, gcPercent)
	}
	if got := debug.SetMemoryLimit(-1); got != 512<<20 {
		t.Errorf("memory limit %d, want half the container's", got)
	}
	debug.SetMemoryLimit(1 << 40)
	set := func(name string) string { return map[string]string{"GOGC": "50", "GOMEMLIMIT": "1GiB"}[name] }
	collectGarbage(set, limited)
	if got := debug.SetGCPercent(100); got != 100 {
		t.Errorf("GOGC from the environment overridden: %d", got)
	}
	if got := debug.SetMemoryLimit(-1); got != 1<<40 {
		t.Errorf("GOMEMLIMIT from the environment overridden: %d", got)
	}
}
