"""Test setup: CPU with 8 simulated devices (set before JAX is imported), repo root importable."""
import os
import sys
import tempfile

# Compiling tiny programs, not running them, is most of the suite's time: the fast-compile flags of
# tests/helpers.py FAST_COMPILE (kept in step with it by hand: this runs before anything is imported).
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0 "
                      "--xla_cpu_use_fusion_emitters=false")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Tests in one process (and the CLI runs they start, tests/helpers.py) share compiled programs
# through JAX's persistent cache: the tiny configs recur across tests.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), f"vdit-test-jax-cache-{os.getuid()}"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pytest.ini's --dist=loadscope runs each module whole on one worker, in collection order: the
# longest modules (cold-cache run on 2 cores) start first so both workers finish together, and
# test_sample_cli first of all: it builds the tiny trained model (tests/helpers.py trained_tiny)
# that test_distill and test_lora then find ready instead of waiting for it.
_LONGEST_FIRST = ("test_sample_cli", "test_modes_learned", "test_evaluate", "test_distill", "test_faults",
                  "test_multihost", "test_vae_train", "test_latent_cache", "test_compile_check", "test_sharding",
                  "test_model", "test_nonfinite", "test_tfds_builder", "test_lora", "test_ingest", "test_train",
                  "test_commands", "test_frame_conditioning", "test_context_parallel", "test_grad_accum",
                  "test_wan_workdir")


def pytest_collection_modifyitems(config, items):
  del config
  rank = {name: i for i, name in enumerate(_LONGEST_FIRST)}
  items.sort(key=lambda item: rank.get(item.path.stem, len(rank)))  # stable: the rest keep their order
