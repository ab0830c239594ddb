"""Graph-clustered A/B tests: Louvain / LinkLouvain assignment and interference-aware readout.

Specified in ../shared/specs/abtest.md; implemented by issue 7. No public API yet.
"""
