"""Reference U-Net training configs (docs/method.md §8.1): ``default.py`` and one file per
dataset."""
