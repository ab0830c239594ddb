"""campaign_core's salted hashes, tested once for every package that cuts them (assignment, mixed-policy components,
user splits, cross-fitting folds): uniform, independent across salts, a function of (id, salt) alone whatever the
array's dtype, order or chunking, equal to the documented formula (recomputed here from scratch in pure Python), and
strict about missing ids; and `chunk_generator`'s content-keyed streams."""

from __future__ import annotations

import hashlib
import time

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from campaign_core import InputError, chunk_generator, salted_hash, salted_uniform, seeded_salt

N = 100_000
MASK = (1 << 64) - 1
INT64 = st.integers(-(1 << 63), (1 << 63) - 1)


# ---- the documented formula, from scratch (pure Python: no numpy, no pandas) -----------------------------------------

def _splitmix64(z: int) -> int:
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def _siphash24(key: bytes, data: bytes) -> int:
    """SipHash-2-4, the string hash under pandas.util.hash_array (key "0123456789123456", UTF-8 bytes)."""
    def rotl(x: int, b: int) -> int:
        return ((x << b) | (x >> (64 - b))) & MASK

    k0, k1 = int.from_bytes(key[:8], "little"), int.from_bytes(key[8:16], "little")
    v = [k0 ^ 0x736F6D6570736575, k1 ^ 0x646F72616E646F6D, k0 ^ 0x6C7967656E657261, k1 ^ 0x7465646279746573]

    def rounds(n: int) -> None:
        for _ in range(n):
            v[0] = (v[0] + v[1]) & MASK
            v[1] = rotl(v[1], 13) ^ v[0]
            v[0] = rotl(v[0], 32)
            v[2] = (v[2] + v[3]) & MASK
            v[3] = rotl(v[3], 16) ^ v[2]
            v[0] = (v[0] + v[3]) & MASK
            v[3] = rotl(v[3], 21) ^ v[0]
            v[2] = (v[2] + v[1]) & MASK
            v[1] = rotl(v[1], 17) ^ v[2]
            v[2] = rotl(v[2], 32)

    tail = len(data) % 8
    words = [int.from_bytes(data[i:i + 8], "little") for i in range(0, len(data) - tail, 8)]
    words.append(((len(data) & 0xFF) << 56) | int.from_bytes(data[len(data) - tail:], "little"))
    for word in words:
        v[3] ^= word
        rounds(2)
        v[0] ^= word
    v[2] ^= 0xFF
    rounds(4)
    return v[0] ^ v[1] ^ v[2] ^ v[3]


def reference_uniform(label, salt: str) -> float:
    """campaign_core/hashing.py's formula: key(id) is the id as a 64-bit two's-complement word for integers and
    pandas' hash of the value for other labels (splitmix64 of the SipHash of its UTF-8 bytes, for strings)."""
    if isinstance(label, int):
        key = label & MASK
    else:
        key = _splitmix64(_siphash24(b"0123456789123456", label.encode("utf-8")))
    salt_word = int.from_bytes(hashlib.sha256(salt.encode()).digest()[:8], "little")
    return (_splitmix64(_splitmix64(key) ^ salt_word) >> 11) / 2 ** 53


@pytest.mark.parametrize("label", [0, 1, -1, 7, -123_456_789, 2 ** 63 - 1, -(2 ** 63), "", "user-1", "ünïcødé",
                                   "a label longer than sixteen bytes"])
@pytest.mark.parametrize("salt", ["invite-2026-11", "ope-folds/7"])
def test_the_documented_formula_recomputed_from_scratch(label, salt):
    ids = np.array([label], dtype=object if isinstance(label, str) else np.int64)
    assert salted_uniform(ids, salt)[0] == reference_uniform(label, salt)
    assert salted_uniform(ids, salt)[0] == (int(salted_hash(ids, salt)[0]) >> 11) / 2 ** 53


@settings(max_examples=200, deadline=None)
@given(label=INT64 | st.text(max_size=40), salt=st.text(min_size=1, max_size=20))
def test_the_formula_holds_for_any_integer_or_text(label, salt):
    ids = np.array([label], dtype=object if isinstance(label, str) else np.int64)
    assert salted_uniform(ids, salt)[0] == reference_uniform(label, salt)


# ---- uniform, and independent across salts ---------------------------------------------------------------------------

@pytest.mark.parametrize("ids", [np.arange(N), np.arange(N) * 1_000_003 - 7 * N,
                                 np.array([f"user-{i}" for i in range(N)], dtype=object)],
                         ids=["consecutive", "spread-negative", "strings"])
def test_uniform_on_100_000_ids(ids):
    u = salted_uniform(ids, "uniformity")
    assert ((u >= 0) & (u < 1)).all()
    assert stats.kstest(u, "uniform").pvalue > 1e-3
    counts = np.bincount((u * 100).astype(int), minlength=100)  # the percentiles, where designs cut
    assert stats.chisquare(counts).pvalue > 1e-3
    assert abs(np.corrcoef(u[:-1], u[1:])[0, 1]) < 4 / np.sqrt(N)  # neighbouring ids draw independently


@pytest.mark.parametrize("salt_a, salt_b", [("spring", "summer"), ("assign-7", "assign-8"),
                                            ("invite", "invite/pair"), (seeded_salt("ope-folds", 1),
                                                                        seeded_salt("ope-folds", 2))])
def test_independent_across_salts(salt_a, salt_b):
    ids = np.arange(N)
    u, v = salted_uniform(ids, salt_a), salted_uniform(ids, salt_b)
    assert abs(np.corrcoef(u, v)[0, 1]) < 4 / np.sqrt(N)
    agree = np.mean((u < 0.5) == (v < 0.5))  # the groups of a p = 0.5 design under the two salts
    assert abs(agree - 0.5) < 4 * np.sqrt(0.25 / N)
    joint = np.histogram2d(u, v, bins=4)[0]  # every (quartile, quartile) cell near N / 16
    assert stats.chisquare(joint.ravel()).pvalue > 1e-3


def test_seeded_salt_names_the_purpose_and_the_seed():
    assert seeded_salt("ope-folds", 7) == "ope-folds/7"
    assert seeded_salt("link-candidates", np.int64(3)) == "link-candidates/3"


# ---- a function of (id, salt) alone ----------------------------------------------------------------------------------

@settings(max_examples=100, deadline=None)
@given(data=st.data(), ids=st.lists(INT64, min_size=1, max_size=60) | st.lists(st.text(max_size=12), min_size=1,
                                                                                   max_size=60))
def test_a_draw_does_not_depend_on_the_rest_of_the_array(data, ids):
    """Row order, chunking and the other ids in the array change nothing."""
    as_array = np.array(ids, dtype=object if isinstance(ids[0], str) else np.int64)
    whole = salted_uniform(as_array, "order")
    order = np.array(data.draw(st.permutations(range(len(ids)))), dtype=np.int64)
    np.testing.assert_array_equal(salted_uniform(as_array[order], "order"), whole[order])
    cut = data.draw(st.integers(0, len(ids)))
    chunks = [salted_uniform(part, "order") for part in (as_array[:cut], as_array[cut:]) if len(part)]
    np.testing.assert_array_equal(np.concatenate(chunks), whole)
    one = data.draw(st.integers(0, len(ids) - 1))
    assert salted_uniform(as_array[one:one + 1], "order")[0] == whole[one]


@pytest.mark.parametrize("dtype", ["int8", "int16", "int32", "int64", "Int64", "int64[pyarrow]"])
def test_integer_dtypes_give_the_same_draws(dtype):
    ids = np.array([-128, -5, -1, 0, 1, 42, 127])
    want = salted_uniform(ids, "dtypes")
    np.testing.assert_array_equal(salted_uniform(pd.array(ids, dtype=dtype), "dtypes"), want)
    np.testing.assert_array_equal(salted_uniform(pd.Series(ids, dtype=dtype), "dtypes"), want)
    np.testing.assert_array_equal(salted_uniform(ids.tolist(), "dtypes"), want)


def test_unsigned_ids_are_their_64_bit_words():
    ids = np.array([0, 1, 200, 2 ** 63, 2 ** 64 - 1], dtype=np.uint64)
    want = salted_uniform(ids.view(np.int64), "unsigned")  # the same 64-bit words read as signed
    np.testing.assert_array_equal(salted_uniform(ids, "unsigned"), want)
    np.testing.assert_array_equal(salted_uniform(ids[:3].astype(np.uint8), "unsigned"), want[:3])


def test_string_containers_give_the_same_draws():
    labels = ["a", "user-17", "ünïcødé", ""]
    want = salted_uniform(np.array(labels, dtype=object), "strings")
    for ids in (labels, np.array(labels), pd.Series(labels), pd.array(labels, dtype="string"),
                pd.Series(labels, dtype="category")):
        np.testing.assert_array_equal(salted_uniform(ids, "strings"), want)


@pytest.mark.parametrize("ids", [np.array([1.0, np.nan]), np.array(["a", None], dtype=object),
                                 pd.array([1, None], dtype="Int64"), pd.Series(["a", None], dtype="string"),
                                 [3, None]])
def test_missing_ids_are_rejected(ids):
    with pytest.raises(InputError, match="1 missing id"):
        salted_uniform(ids, "missing")


@pytest.mark.parametrize("salt", ["", None, 7])
def test_a_salt_must_be_a_non_empty_string(salt):
    with pytest.raises(InputError, match="salt: need a non-empty string"):
        salted_uniform(np.arange(3), salt)


# ---- chunk_generator -------------------------------------------------------------------------------------------------

def _stream(generator: np.random.Generator) -> np.ndarray:
    return generator.integers(0, 2 ** 62, size=8)


def test_chunk_generator_same_content_same_stream():
    rng = np.random.default_rng(0)
    user = rng.integers(0, 10 ** 9, 5_000)
    reward = rng.random(5_000)
    first = _stream(chunk_generator(7, 1, user, reward))
    again = _stream(chunk_generator(7, 1, user.copy(), reward.copy()))  # other objects, other memory
    placed = np.concatenate([np.zeros(3, dtype=user.dtype), user])[3:]  # the same rows at another position
    np.testing.assert_array_equal(first, again)
    np.testing.assert_array_equal(first, _stream(chunk_generator(7, 1, placed, reward)))
    labels = np.array([f"u{i}" for i in range(50)], dtype=object)
    np.testing.assert_array_equal(_stream(chunk_generator(7, 1, labels)), _stream(chunk_generator(7, 1, labels.copy())))


@settings(max_examples=50, deadline=None)
@given(rows=st.lists(st.integers(0, 1000), min_size=1, max_size=1024), data=st.data())
def test_chunk_generator_different_content_different_stream(rows, data):
    """Any change to a chunk of up to 1,024 rows (every row is in the digest), to its length, to the stream number or
    to the seed gives another stream."""
    chunk = np.array(rows, dtype=np.int64)
    base = _stream(chunk_generator(3, 0, chunk))
    changed = chunk.copy()
    changed[data.draw(st.integers(0, len(rows) - 1))] += data.draw(st.integers(1, 10))
    assert not np.array_equal(base, _stream(chunk_generator(3, 0, changed)))
    assert not np.array_equal(base, _stream(chunk_generator(3, 0, np.append(chunk, 0))))
    assert not np.array_equal(base, _stream(chunk_generator(3, 1, chunk)))
    assert not np.array_equal(base, _stream(chunk_generator(4, 0, chunk)))


def test_chunk_generator_cost_does_not_grow_with_the_chunk():
    def best_time(arrays, repeats: int = 7) -> float:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            chunk_generator(1, 0, *arrays)
            times.append(time.perf_counter() - start)
        return min(times)

    rng = np.random.default_rng(1)
    small = [rng.integers(0, 10 ** 9, 4_000), rng.random(4_000)]
    large = [rng.integers(0, 10 ** 9, 4_000_000), rng.random(4_000_000)]  # 64 MB: hashing it all takes tens of ms
    assert best_time(large) < 3 * best_time(small) + 0.005
