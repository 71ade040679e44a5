"""bbvi-kit's benchmarks: speed and memory, measured, never asserted in tests.

``python -m benchmarks`` runs them all and writes ``benchmarks/RESULTS.md``.
"""
