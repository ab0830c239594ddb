"""What every package of the platform shares: the input-error type, salted hashes and the scaling contract.

Domain packages (`causal_fs`, `bandits`, `budget_rl`, `abtest`) and `pipelines` import this package; it imports
none of them, and nothing of Dask or MLflow.
"""

from campaign_core.errors import InputError
from campaign_core.hashing import chunk_generator, chunk_seed, salted_hash, salted_uniform, seeded_salt
from campaign_core.labels import plain, sorted_labels
from campaign_core.statistic import ChunkedTable, SelfMerging, Statistic, StatisticOf, compute, is_chunked

__all__ = ["ChunkedTable", "InputError", "SelfMerging", "Statistic", "StatisticOf", "chunk_generator", "chunk_seed",
           "compute", "is_chunked", "plain", "salted_hash", "salted_uniform", "seeded_salt", "sorted_labels"]
