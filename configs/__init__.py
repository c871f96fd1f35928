"""Experiment configs: ``get_config(arg=None)`` returning an ``ml_collections.ConfigDict``.

`default` is the embedded offline default; every dataset config mutates its sections.
Load them by path: ``--config=configs/cifar10.py[:arg]``, from the repository root.
"""
