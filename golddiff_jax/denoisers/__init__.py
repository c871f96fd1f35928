"""Analytical denoisers, one module per method; each registers itself (`base.register`) with its
options dataclass and hooks. ``METHODS`` is the registry: method name → `base.Denoiser`."""

import importlib
import pkgutil

from golddiff_jax.denoisers import base
# The built-in methods in the order tables list them; every other module of this package is
# imported after them, so a new method is one new module here (it registers itself on import).
from golddiff_jax.denoisers import optimal, wiener, pca_locality, golddiff, els, els_golden  # noqa: I001

_NOT_METHODS = ("base", "options_doc")
for _module in pkgutil.iter_modules(__path__):
  if _module.name not in _NOT_METHODS:
    importlib.import_module(f"{__name__}.{_module.name}")

METHODS = base.REGISTRY
get = base.get
register = base.register

__all__ = ["METHODS", "base", "els", "els_golden", "get", "golddiff", "optimal", "pca_locality",
           "register", "wiener"]
