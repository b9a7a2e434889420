"""Benchmarks of the reconciler against the sandbox servers (``make bench``; see README.md)."""
