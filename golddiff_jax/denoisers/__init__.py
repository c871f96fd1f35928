"""Analytical denoisers. Each module defines ``OPTIONS`` (name → default), a host-side
``prepare(stats, abar, options, batch) -> Plan`` run once per sampling step, and a pure, jit-able
``apply(stats, plan, x_t [B, D], key) -> x0 [B, D]``. Optionally ``prepare_run(stats, abars,
options, batch) -> list[Plan]`` replaces per-step ``prepare`` to share work across a run's steps,
and ``check_options(resolved_options)`` validates option values (raises ValueError)."""

from golddiff_jax.denoisers import els, els_golden, golddiff, optimal, pca_locality, wiener

METHODS = {
    "optimal": optimal,
    "wiener": wiener,
    "pca_locality": pca_locality,
    "golddiff": golddiff,
    "els": els,
    "els_golden": els_golden,
}

__all__ = ["METHODS", "els", "els_golden", "golddiff", "optimal", "pca_locality", "wiener"]
