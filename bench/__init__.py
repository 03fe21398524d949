"""idstream benchmarks: `python -m bench [NAME ...] [--runs N]` (see bench/README.md)."""
