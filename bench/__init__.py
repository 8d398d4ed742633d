"""Performance benchmarks of the pipeline (`make bench`, or `python -m bench.run [--smoke]`).

Not part of `make test`: the figures depend on the machine. A smoke test
(`tests/local/test_bench_smoke.py`) only checks that a tiny run still produces every figure.
"""
