"""Benchmarks and classical density baselines for skflowsearch."""
