package main

import (
	"os"
	"runtime/debug"
	"strconv"
	"strings"
)

// cgroupMemoryMax is where a container's memory limit is (cgroup v2).
const cgroupMemoryMax = "/sys/fs/cgroup/memory.max"

// collectGarbage sets the edge's garbage collection, unless the environment does:
// GOGC=gcPercent, and, in a container with a memory limit, a soft limit of half of it
// (GOMEMLIMIT: the gateway's Python shares the container), so that the heap's headroom
// never costs the container its memory.
func collectGarbage(getenv func(string) string, memoryMax string) {
	if getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercent)
	}
	if getenv("GOMEMLIMIT") == "" {
		if limit, ok := containerMemory(memoryMax); ok {
			debug.SetMemoryLimit(limit / 2)
		}
	}
}

// containerMemory is the memory limit in the cgroup file at path; false when there is
// none ("max", or no such file: not in a container, or cgroup v1).
func containerMemory(path string) (int64, bool) {
	content, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	limit, err := strconv.ParseInt(strings.TrimSpace(string(content)), 10, 64)
	return limit, err == nil && limit > 0
}
