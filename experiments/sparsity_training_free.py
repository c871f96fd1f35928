r"""The training-free sparse variant in the K*(τ) harness: analytical denoisers on the toy data
or on the real digits, with and without the x̂_0 soft threshold
(golddiff_jax.sparsity.x0_threshold).

  python experiments/sparsity_training_free.py --workdir=workdir/sparsity_training_free \
      [--dims=8,32,128] [--kinds=sparse,rotated] [--methods=optimal,golddiff] [--r=0.05]
  python experiments/sparsity_training_free.py --data=digits --num_samples=256 \
      --ks=2,5,10,20 --workdir=workdir/sparsity_training_free_digits

With ``--data=digits`` the database is the 4,500 training digits of the image study's split
(`golddiff_jax.sparsity.digits`), quality is scored against its 500 held-out digits, the
"support" is the non-background pixels (on-support SW2 over them; off-support energy is the
background energy), GoldDiff uses the digit settings of configs/default.py (θ = 0.01 with the
diagonal floor), and ``digits_grid.png`` shows the first 16 samples of every threshold at every K.

For each (kind, d): draw approximately sparse toy data (s = 2, δ = ``--delta``) with the study's
generator, fit the statistics on ``--n_train`` points (as [N, d, 1, 1] images), and run the
project's DDIM sampler (`gd.sample`) from the same latents at every K in ``--ks``, for every
method with no threshold and with λ = r/2 in the pixel and the PCA basis. Quality is SW2 and
on-support SW2 against held-out points (`golddiff_jax.sparsity.metrics`), K* uses τ = 1.1 × the
unthresholded method's SW2 at the largest K. Per step it logs GoldDiff's k_t, s_t =
#{|x̂_0| > δ_log} in the threshold's basis and d_eff(t) (`x0_threshold.trace`). Writes
``results.csv``, ``results.md``, ``trace.csv`` and ``quality_vs_k.png`` into the workdir.
"""

import csv
import json
import os
import sys
import time

from absl import app, flags
import jax
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

import golddiff_jax as gd  # noqa: E402  pylint: disable=g-import-not-at-top
from golddiff_jax import budgets, schedules  # noqa: E402
from golddiff_jax.sparsity import metrics, toy_data, x0_threshold  # noqa: E402

_WORKDIR = flags.DEFINE_string("workdir", None, "Output folder.")
_DIMS = flags.DEFINE_list("dims", ["8", "32", "128"], "Ambient dimensions d.")
_KINDS = flags.DEFINE_list("kinds", ["sparse", "rotated"], "Toy data kinds.")
_METHODS = flags.DEFINE_list("methods", ["optimal", "golddiff"], "Analytical methods.")
_KS = flags.DEFINE_list("ks", ["2", "4", "8", "16", "32"], "DDIM step counts K.")
_R = flags.DEFINE_float("r", 0.05, "Threshold r (λ = r/2).")
_DELTA = flags.DEFINE_float("delta", 0.01, "Inactive-coordinate std of the data.")
_N_TRAIN = flags.DEFINE_integer("n_train", 5000, "Training points (the database).")
_N = flags.DEFINE_integer("num_samples", 500, "Samples per setting (= held-out points).")
_SEED = flags.DEFINE_integer("seed", 0, "Data and latent seed.")
_DATA = flags.DEFINE_enum("data", "toy", ["toy", "digits"], "Toy vectors or the real digits.")
# GoldDiff on the digits: the settings of the default digit config (configs/default.py).
DIGIT_OPTIONS = {"golddiff": {"mask_threshold": 0.01, "diag_floor": 0.01}}
_LOG_DELTA = 1e-2


def main(argv):
  del argv
  if not _WORKDIR.value:
    print("error: --workdir is required", file=sys.stderr)
    sys.exit(2)
  try:
    ks = sorted(int(k) for k in _KS.value)
    specs = [toy_data.ToySpec(kind, int(d), 2, _DELTA.value) for kind in _KINDS.value
             for d in _DIMS.value]
    variants = [None] + [x0_threshold.Threshold(_R.value, basis) for basis in ("pixel", "pca")]
    for k in ks:
      schedules.ddim_timesteps(k)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  os.makedirs(_WORKDIR.value, exist_ok=True)
  if _DATA.value == "digits":
    _run_digits(ks, variants)
    return
  rows, traces = [], []
  for spec in specs:
    x_train, x_test, _ = toy_data.splits(spec, _N_TRAIN.value, _N.value, _SEED.value)
    stats = gd.fit(x_train.reshape(-1, spec.d, 1, 1))
    latents = gd.noise(jax.random.key(_SEED.value + 1), _N.value, stats.image_shape)
    for method in _METHODS.value:
      options = {"low_res_dim": 0} if method == "golddiff" else {}
      for variant in variants:
        for k in ks:
          start = time.perf_counter()
          out = gd.sample(stats, latents, method=method, num_steps=k,
                          key=jax.random.key(_SEED.value + 2), x0_threshold=variant, **options)
          x = np.asarray(out.images, np.float64).reshape(_N.value, spec.d)
          xb, tb = toy_data.to_basis(x, spec), toy_data.to_basis(x_test, spec)
          act = spec.active()
          row = {"kind": spec.kind, "d": spec.d, "method": method,
                 "threshold": "none" if variant is None else variant.basis,
                 "r": 0.0 if variant is None else variant.r, "k": k,
                 "sw2": metrics.sliced_w2(x, x_test, seed=_SEED.value),
                 "on_support_sw2": metrics.sliced_w2(xb[:, act], tb[:, act], seed=_SEED.value),
                 "off_support_energy": metrics.off_support_energy(xb, act),
                 "seconds": time.perf_counter() - start}
          rows.append(row)
          if k == ks[-1]:
            k_t = None
            if method == "golddiff":
              b = budgets.resolve_budgets(stats.num_images)
              k_t = [kt for _, kt in budgets.schedule(
                  b, [schedules.alpha_bar(int(t)) for t in out.timesteps])]
            basis = "pixel" if variant is None or variant.basis == "pixel" else "pca"
            for tr in x0_threshold.trace(stats, out.x0_trajectory, out.timesteps, basis=basis,
                                         delta=_LOG_DELTA, k_t=k_t):
              traces.append({**{k2: row[k2] for k2 in ("kind", "d", "method", "threshold")},
                             "basis": basis, **tr})
          print(json.dumps({k2: (round(v, 5) if isinstance(v, float) else v)
                            for k2, v in row.items()}), flush=True)
  _write(rows, traces, ks)


def _run_digits(ks, variants):
  """The harness on the real digits (see the module docstring)."""
  from golddiff_jax import outputs  # pylint: disable=g-import-not-at-top
  from golddiff_jax.sparsity import digits  # pylint: disable=g-import-not-at-top
  x_train, x_test, _, _ = digits.load_split(500)
  n = _N.value
  test_flat = x_test.reshape(len(x_test), -1).astype(np.float64)
  fg = np.setdiff1d(np.arange(test_flat.shape[1]), digits.background(x_train))
  mean = x_train.reshape(len(x_train), -1).mean(0)
  stats = gd.fit(x_train)
  latents = gd.noise(jax.random.key(_SEED.value + 1), n, stats.image_shape)
  rows, traces, shown = [], [], {}
  for method in _METHODS.value:
    options = DIGIT_OPTIONS.get(method, {})
    for variant in variants:
      name = "none" if variant is None else variant.basis
      for k in ks:
        start = time.perf_counter()
        out = gd.sample(stats, latents, method=method, num_steps=k,
                        key=gd.sample_keys(jax.random.key(_SEED.value + 2), 0, n),
                        x0_threshold=variant, **options)
        x = np.asarray(out.images, np.float64).reshape(n, -1)
        row = {"kind": "digits", "d": x.shape[1], "method": method, "threshold": name,
               "r": 0.0 if variant is None else variant.r, "k": k,
               "sw2": metrics.sliced_w2(x, test_flat, seed=_SEED.value),
               "on_support_sw2": metrics.sliced_w2(x[:, fg], test_flat[:, fg], seed=_SEED.value),
               "off_support_energy": metrics.off_support_energy(x - mean, fg),
               "ink_fraction": digits.ink_fraction(x),
               "seconds": time.perf_counter() - start}
        rows.append(row)
        shown[(method, name, k)] = np.asarray(out.images[:16])
        if k == ks[-1]:
          basis = "pixel" if variant is None or variant.basis == "pixel" else "pca"
          for tr in x0_threshold.trace(stats, out.x0_trajectory, out.timesteps, basis=basis,
                                       delta=_LOG_DELTA):
            traces.append({"kind": "digits", "d": x.shape[1], "method": method,
                           "threshold": name, "basis": basis, **tr})
        print(json.dumps({k2: (round(v, 5) if isinstance(v, float) else v)
                          for k2, v in row.items()}), flush=True)
  _write(rows, traces, ks)
  names = [v if isinstance(v, str) else v.basis for v in ["none"] + variants[1:]]
  fig, axes = plt.subplots(len(_METHODS.value) * len(names), len(ks),
                           figsize=(2.2 * len(ks), 2.3 * len(_METHODS.value) * len(names)),
                           squeeze=False)
  for i, (method, name) in enumerate((m, t) for m in _METHODS.value for t in names):
    for j, k in enumerate(ks):
      ax = axes[i][j]
      ax.imshow(outputs.image_grid(shown[(method, name, k)], columns=4), cmap="gray",
                vmin=0, vmax=255)
      ax.set_xticks([])
      ax.set_yticks([])
      if i == 0:
        ax.set_title(f"K = {k}")
      if j == 0:
        ax.set_ylabel(f"{method}\nthreshold: {name}")
  fig.suptitle(f"Training-free x̂0 soft threshold on the real digits (r = {_R.value:g})")
  fig.tight_layout()
  fig.savefig(os.path.join(_WORKDIR.value, "digits_grid.png"), dpi=100)
  plt.close(fig)


def _write(rows, traces, ks):
  wd = _WORKDIR.value
  for name, data in (("results.csv", rows), ("trace.csv", traces)):
    with open(os.path.join(wd, name), "w", newline="") as f:
      w = csv.DictWriter(f, fieldnames=list(data[0]))
      w.writeheader()
      w.writerows(data)
  lines = ["| kind | d | method | threshold | " + " | ".join(f"SW2 K={k}" for k in ks)
           + " | K*(τ) | on-support SW2 K=max | off-support E K=max |", "|" + "---|" * (len(ks) + 7)]
  keys = sorted({(r["kind"], r["d"], r["method"], r["threshold"]) for r in rows},
                key=lambda t: (t[0], t[1], t[2], ["none", "pixel", "pca"].index(t[3])))
  for key in keys:
    sel = sorted((r for r in rows if (r["kind"], r["d"], r["method"], r["threshold"]) == key),
                 key=lambda r: r["k"])
    base = [r for r in rows if (r["kind"], r["d"], r["method"], r["threshold"]) ==
            (*key[:3], "none") and r["k"] == ks[-1]][0]
    star = metrics.k_star(ks, [r["sw2"] for r in sel], 1.1 * base["sw2"])
    lines.append(f"| {' | '.join(map(str, key))} | " + " | ".join(f"{r['sw2']:.4f}" for r in sel)
                 + f" | {'>' + str(ks[-1]) if star is None else star} | "
                 f"{sel[-1]['on_support_sw2']:.4f} | {sel[-1]['off_support_energy']:.3g} |")
  with open(os.path.join(wd, "results.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
  kinds = sorted({r["kind"] for r in rows})
  methods = sorted({r["method"] for r in rows})
  fig, axes = plt.subplots(len(kinds), len(methods), figsize=(5 * len(methods), 3.6 * len(kinds)),
                           squeeze=False, sharey=True)
  colours = {"none": "black", "pixel": "tab:red", "pca": "tab:blue"}
  dims = sorted({r["d"] for r in rows})
  for i, kind in enumerate(kinds):
    for j, method in enumerate(methods):
      ax = axes[i][j]
      for n, d in enumerate(dims):
        for thr, colour in colours.items():
          sel = sorted((r for r in rows if (r["kind"], r["d"], r["method"], r["threshold"]) ==
                        (kind, d, method, thr)), key=lambda r: r["k"])
          if sel:
            ax.plot([r["k"] for r in sel], [r["sw2"] for r in sel], ["-", "--", ":"][n % 3],
                    color=colour, marker="o", ms=3, label=f"{thr}, d={d}")
      ax.set_xscale("log", base=2)
      ax.set_yscale("log")
      ax.set_title(f"{kind}: {method}")
      ax.set_xlabel("DDIM steps K")
      ax.grid(alpha=0.3, which="both")
      ax.legend(fontsize=6, ncol=2)
    axes[i][0].set_ylabel("SW2 vs held-out")
  fig.suptitle(f"Training-free x̂0 soft threshold (r = {_R.value:g}): none / pixel / PCA basis")
  fig.tight_layout()
  fig.savefig(os.path.join(wd, "quality_vs_k.png"), dpi=110)
  plt.close(fig)


if __name__ == "__main__":
  app.run(main)
