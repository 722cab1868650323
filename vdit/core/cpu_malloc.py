"""glibc malloc settings under which XLA:CPU reuses its per-step scratch memory (CPU training).

XLA's CPU runtime allocates each execution's temporaries as one large block. Under glibc's
defaults that block is mmap'd and unmapped again every step, so every step faults in fresh
pages. Measured on 2 cores, configs/toy.py, 150 steps: about 100,000 page faults a second and
22 s of kernel time; with these settings, 5 s of kernel time, and 3.5-4.1 -> 4.7-5.8 steps/s.

glibc reads them only at process start, so they go into the environment of the processes
that train on a CPU: launch/toy_demo.sh (which exports these), the tests' command runs and the
toy benchmarks. Accelerator hosts should not use them: freed host memory would
stay with the process.
"""
MALLOC_ENV = {
    "MALLOC_ARENA_MAX": "1",  # every thread allocates from the main heap, which has no size cap
    "MALLOC_MMAP_THRESHOLD_": str(1 << 30),  # blocks under 1 GiB come from that heap, not from mmap
    "MALLOC_TRIM_THRESHOLD_": str(1 << 30),  # and the heap keeps what is freed, for the next step
}
