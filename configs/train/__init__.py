"""Reference U-Net training configs (spec §8.1): ``default.py`` and one file per dataset."""
