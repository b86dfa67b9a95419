"""Benchmarks of cgwatchdog against its peers; see README.md."""
