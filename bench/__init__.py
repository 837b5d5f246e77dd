"""The benchmark suite (issue 6): ``python -m bench.<name>``; see the README's "Benchmarks"."""
