"""Analytical denoisers, one module per method; each registers itself (`base.register`) with its
options dataclass and hooks. ``METHODS`` is the registry: method name → `base.Denoiser`."""

from golddiff_jax.denoisers import base
# Import order is the registry's order (tables list the methods in it).
from golddiff_jax.denoisers import optimal, wiener, pca_locality, golddiff, els, els_golden  # noqa: I001

METHODS = base.REGISTRY
get = base.get
register = base.register

__all__ = ["METHODS", "base", "els", "els_golden", "get", "golddiff", "optimal", "pca_locality",
           "register", "wiener"]
