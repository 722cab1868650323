"""Test setup: CPU with 8 simulated devices (set before JAX is imported), repo root importable."""
import os
import sys
import tempfile

# No LLVM optimisation: compiling tiny programs, not running them, is most of the suite's time
# (tests/helpers.py FAST_COMPILE).
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Tests in one process (and the CLI runs they start, tests/helpers.py) share compiled programs
# through JAX's persistent cache: the tiny configs recur across tests.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), f"vdit-test-jax-cache-{os.getuid()}"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
