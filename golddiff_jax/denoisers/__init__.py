"""Analytical denoisers. Each module defines ``OPTIONS`` (name → default), a host-side
``prepare(stats, abar, options, batch) -> Plan`` run once per sampling step, and a pure, jit-able
``apply(stats, plan, x_t [B, D]) -> x0 [B, D]``."""

from golddiff_jax.denoisers import optimal, pca_locality, wiener

METHODS = {
    "optimal": optimal,
    "wiener": wiener,
    "pca_locality": pca_locality,
}

__all__ = ["METHODS", "optimal", "pca_locality", "wiener"]
