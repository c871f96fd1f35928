"""The option reference, generated from the methods' options dataclasses:

    python -m golddiff_jax.denoisers.options_doc > docs/options.md

(tests/test_registry.py checks that the committed docs/options.md is this output.)
"""

from __future__ import annotations

import dataclasses
import sys

from golddiff_jax.denoisers import METHODS, base

_PACKAGE = "golddiff_jax.denoisers."

_INTRO = """\
# Denoiser options

Generated from the methods' options dataclasses by
`python -m golddiff_jax.denoisers.options_doc > docs/options.md`; edit the dataclasses, not this
file.

An option is passed by name to `golddiff_jax.denoise` / `sample` / `prepare`
(`gd.sample(stats, latents, method="golddiff", k_min=50)`), or set in a config under the section
in the second column (`--config.golden.k_min=50`, `--config.denoiser.mask_threshold=0.02`). A
config field left None takes the chosen method's default (the third column). A bad value is a
`ValueError` naming the option (the config field, in a config), raised before any data is loaded.
"""


def _summary(denoiser: base.Denoiser) -> str:
  """The first paragraph of the method module's docstring, on one line."""
  doc = sys.modules[denoiser.apply.__module__].__doc__ or ""
  return " ".join(doc.strip().split("\n\n")[0].split())


def _cell(text: str) -> str:
  return text.replace("|", "\\|").replace("\n", " ")


def _default(value) -> str:
  return f"`{value!r}`"


def builtin_methods() -> list[str]:
  """The methods this package defines (not ones registered by a test or notebook)."""
  return [name for name, d in METHODS.items() if d.apply.__module__.startswith(_PACKAGE)]


def render(methods: list[str] | None = None) -> str:
  lines = [_INTRO]
  for name in builtin_methods() if methods is None else methods:
    denoiser = base.get(name)
    lines += [f"## `{name}`", "", _summary(denoiser), "",
              "| option | config field | default | meaning |", "|---|---|---|---|"]
    for field in dataclasses.fields(denoiser.Options):
      lines.append(f"| `{field.name}` | `{base.section(field)}.{field.name}` | "
                   f"{_cell(_default(field.default))} | {_cell(base.doc(field))} |")
    lines.append("")
  return "\n".join(lines)


if __name__ == "__main__":
  sys.stdout.write(render())
