"""Whether every float of a pytree is finite: what a checkpoint must hold and a step must produce."""
import jax
import jax.numpy as jnp


@jax.jit
def all_finite(tree) -> jax.Array:
  """A scalar bool, False if any floating-point leaf holds a NaN or an infinity. One fused reduction
  over sharded arrays when called on them; inlined when called inside another jitted function."""
  checks = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
  return jnp.all(jnp.stack(checks)) if checks else jnp.array(True)
