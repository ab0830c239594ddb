"""Salted hashes of ids: the platform's one way to turn (id, salt) into a reproducible uniform draw.

Assignment to experiment groups, the component a user follows in a mixed policy, the holdout split of users and the
cross-fitting folds of off-policy evaluation all cut `salted_uniform(ids, salt)` at fixed points, so a user's draw
depends only on the id and the salt: not on row order, partitioning, scheduler or process. Different salts give
independent draws.

The formula, so that it can be reproduced outside Python (for an audit, or in SQL):

    key(id)  = id as a 64-bit two's-complement word       for integer ids
             = pandas.util.hash_array(id)                  for any other label (strings, ...)
    salt     = the first 8 bytes of SHA-256(salt text), little-endian
    hash     = splitmix64(splitmix64(key(id)) XOR salt)
    uniform  = (hash >> 11) / 2^53                         in [0, 1), 53 random bits

with splitmix64 the finalizer z ^= z >> 30; z *= 0xBF58476D1CE4E5B9; z ^= z >> 27; z *= 0x94D049BB133111EB;
z ^= z >> 31 (64-bit wrapping arithmetic).
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from campaign_core.errors import InputError


def splitmix64(words: np.ndarray) -> np.ndarray:
    """The splitmix64 finalizer of 64-bit words: every input bit moves every output bit (wrapping arithmetic)."""
    z = np.asarray(words, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def salt_word(salt: str) -> np.uint64:
    """The 64-bit word of a salt: the first 8 bytes of its SHA-256, little-endian."""
    if not isinstance(salt, str) or not salt:
        raise InputError(f"salt: need a non-empty string, got {salt!r}")
    return np.uint64(int.from_bytes(hashlib.sha256(salt.encode()).digest()[:8], "little"))


def id_words(ids) -> np.ndarray:
    """Each id as a 64-bit word: integers as themselves, any other label by pandas' stable hash of its value."""
    values = np.asarray(ids)
    if values.dtype == object and len(values) and pd.api.types.infer_dtype(values, skipna=False) == "integer":
        values = values.astype(np.int64)  # Python ints in an object array hash as the integers they are
    if values.dtype.kind in "iub":
        return values.astype(np.int64, copy=False).view(np.uint64)
    if values.dtype.kind == "f" or values.dtype == object:
        if pd.isna(values).any():
            raise InputError(f"ids: {int(pd.isna(values).sum())} missing id(s); every row needs an id to hash")
    return pd.util.hash_array(values)


def salted_hash(ids, salt: str) -> np.ndarray:
    """uint64 hash of every id under `salt` (see the module docstring for the formula)."""
    return splitmix64(splitmix64(id_words(ids)) ^ salt_word(salt))


def salted_uniform(ids, salt: str) -> np.ndarray:
    """A uniform number in [0, 1) per id, reproducible from (id, salt) alone; independent across salts."""
    return (salted_hash(ids, salt) >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def seeded_salt(purpose: str, random_state: int) -> str:
    """The salt of a seeded draw, e.g. seeded_salt("ope-folds", 7) -> "ope-folds/7"."""
    return f"{purpose}/{int(random_state)}"


def chunk_seed(random_state: int, stream: int, *arrays) -> list[int]:
    """The entropy of a chunk's random generator: the seed, a stream number and the chunk's content.

    A statistic computed chunk by chunk (permutations within a chunk, a sample of a chunk, replay draws) needs
    randomness that differs between chunks and is the same whenever the same rows form a chunk, on any scheduler
    and whatever the chunk's position. The key is the row count and a digest of at most 1,024 evenly spaced rows of
    each array (numpy arrays or pandas Series), so it costs microseconds however large the chunk. Append a number
    to the list for one of several independent streams of the same chunk (e.g. one per replicate).
    """
    digest = hashlib.blake2b(digest_size=16)
    n = len(arrays[0]) if arrays else 0
    step = max(1, n // 1024)
    for array in arrays:  # sampled before any conversion: a column of strings is not copied whole
        taken = array.iloc[::step].to_numpy() if hasattr(array, "iloc") else np.asarray(array)[::step]
        sample = np.ascontiguousarray(taken)
        digest.update(str(sample.dtype).encode())
        digest.update(sample.tobytes() if sample.dtype != object else repr(sample.tolist()).encode())
    key = np.frombuffer(digest.digest(), dtype=np.uint32).tolist()
    return [int(random_state), int(stream), n, *key]


def chunk_generator(random_state: int, stream: int, *arrays) -> np.random.Generator:
    """A random generator for one chunk of rows, keyed by the seed, a stream number and the chunk's content
    (`chunk_seed`)."""
    return np.random.default_rng(chunk_seed(random_state, stream, *arrays))
