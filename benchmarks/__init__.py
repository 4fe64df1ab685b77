"""The project's benchmarks: `python -m benchmarks SECTION...` (see benchmarks/__main__.py).

The scripts here also run on their own (`python benchmarks/<name>.py`); they share
benchmarks/common.py (data as the library prepares it, the library's `train_step`, JSON out).
"""
