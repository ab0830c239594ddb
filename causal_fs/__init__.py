"""Causal feature selection: which user features change *which arm is best* (HIE/HDD filters).

Specified in ../shared/specs/causal_fs.md; implemented by issue 3. No public API yet.
"""
