"""Seeded mutation fuzzers for the reply decoder and the config loader (DESIGN.md §9).

Run them with ``python tests/fuzz/run.py --target decoder --inputs 1000000 --seed 1``;
``tests/test_fuzz.py`` runs a few thousand inputs of each as part of the suite.
"""
