"""Resident-memory readings for the CPU benchmarks (Linux); the peak is devices.peak_memory_mib.

glibc keeps freed blocks cached under its default, dynamic mmap threshold, so a process's peak
resident size grows with the number of steps it runs whatever it keeps alive. Measuring children
run with MEASURE_ENV fixes the threshold, so every large block goes back to the system when freed
and the peak reflects live memory.
"""
import os

MEASURE_ENV = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(128 * 1024)}


def current_rss_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
