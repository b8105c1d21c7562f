"""The mask generator applied in chunks: the same words whatever the chunking, offset or mix of
added and subtracted streams, and clear refusals of what it cannot mask."""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from training.secagg import encoding, prg
from training.secagg.aggregate import sum_range
from training.secagg.encoding import Layout, encode_vector
from training.secagg.errors import SecAggError
from training.secagg.prg import apply_masks, mask_stream


def key(i: int) -> bytes:
    return bytes([i]) * 32


@settings(max_examples=40, deadline=None)
@given(
    length=st.integers(1, 300),
    offset_blocks=st.integers(0, 50),
    chunk_blocks=st.integers(1, 40),
    adds=st.integers(0, 3),
    subtracts=st.integers(0, 3),
)
def test_chunked_masks_equal_whole_streams_added_and_subtracted(
    length: int, offset_blocks: int, chunk_blocks: int, adds: int, subtracts: int
) -> None:
    offset = 4 * offset_blocks
    start = np.arange(length, dtype=np.uint32) * np.uint32(2654435761)
    expected = start.copy()
    for i in range(adds):
        expected += mask_stream(key(i), length, offset)
    for i in range(subtracts):
        expected -= mask_stream(key(10 + i), length, offset)
    acc = start.copy()
    apply_masks(
        acc,
        add=[key(i) for i in range(adds)],
        subtract=[key(10 + i) for i in range(subtracts)],
        offset=offset,
        chunk_words=4 * chunk_blocks,
    )
    assert np.array_equal(acc, expected)


def test_a_stream_read_from_an_offset_continues_the_whole_stream() -> None:
    whole = mask_stream(key(1), 1000)
    assert np.array_equal(mask_stream(key(1), 1000 - 396, 396), whole[396:])


def test_adding_then_subtracting_a_stream_restores_the_vector() -> None:
    vector = np.arange(100_003, dtype=np.uint32)
    apply_masks(vector, add=[key(1), key(2)], subtract=[key(3)])
    assert not np.array_equal(vector, np.arange(100_003, dtype=np.uint32))
    apply_masks(vector, add=[key(3)], subtract=[key(2), key(1)], chunk_words=1024)
    assert np.array_equal(vector, np.arange(100_003, dtype=np.uint32))


@pytest.mark.parametrize(
    ("vector", "keys", "offset", "chunk", "message"),
    [
        (np.zeros(8, np.uint32), [b"short"], 0, 64, "32 bytes"),
        (np.zeros(8, np.uint32), [key(1)], 2, 64, "multiples of four"),
        (np.zeros(8, np.uint32), [key(1)], -4, 64, "non-negative"),
        (np.zeros(8, np.int64), [key(1)], 0, 64, "uint32"),
        (np.zeros((2, 4), np.uint32), [key(1)], 0, 64, "one-dimensional"),
        (np.zeros(16, np.uint32)[::2], [key(1)], 0, 64, "contiguous"),
        (np.zeros(8, np.uint32), [key(1)], 0, 6, "chunks"),
    ],
)
def test_what_cannot_be_masked_is_refused(
    vector: np.ndarray, keys: list[bytes], offset: int, chunk: int, message: str
) -> None:
    before = vector.copy()
    with pytest.raises(ValueError, match=message):
        apply_masks(vector, add=keys, offset=offset, chunk_words=chunk)
    assert np.array_equal(vector, before)


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 200), st.integers(1, 9), st.integers(0, 2**32 - 1))
def test_encoding_does_not_depend_on_the_chunk_size(dim: int, chunk: int, seed: int) -> None:
    layout = Layout.for_training(model_dim=dim, max_clients=20, clip_norm=0.3, max_weight=3)
    values = np.random.default_rng(seed)
    parts = {
        "update": values.uniform(-1, 1, dim).astype(np.float32),
        "weight": np.array([3]),
        "eval_loss": np.array([values.uniform(0, 9)]),
        "eval_correct": np.array([2.0]),
        "eval_examples": np.array([4.0]),
    }
    whole = encode_vector(parts, layout, np.random.default_rng(seed))
    original = encoding.ENCODE_CHUNK
    try:
        encoding.ENCODE_CHUNK = chunk
        chunked = encode_vector(parts, layout, np.random.default_rng(seed))
    finally:
        encoding.ENCODE_CHUNK = original
    assert np.array_equal(chunked, whole)


def test_a_part_of_the_wrong_size_is_refused() -> None:
    layout = Layout.for_training(model_dim=5, max_clients=20, clip_norm=1.0)
    parts = {
        "update": np.zeros(6),
        "weight": np.ones(1),
        "eval_loss": np.zeros(1),
        "eval_correct": np.zeros(1),
        "eval_examples": np.zeros(1),
    }
    with pytest.raises(SecAggError) as caught:
        encode_vector(parts, layout, np.random.default_rng(0))
    assert caught.value.code == "invalid_input"


class ReadOnly:
    """A storage file without ``readinto`` (some remote storages' files)."""

    def __init__(self, data: bytes) -> None:
        self._inner = io.BytesIO(data)

    def seek(self, position: int) -> int:
        return self._inner.seek(position)

    def read(self, size: int = -1) -> bytes:
        return self._inner.read(min(size, 1000))  # short reads, as sockets give


def test_sum_range_reads_sources_with_or_without_readinto() -> None:
    vectors = [np.arange(5000, dtype=np.uint32) * np.uint32(k) for k in (1, 7, 2**31)]
    blobs = [v.astype("<u4").tobytes() for v in vectors]
    expected = (vectors[0] + vectors[1] + vectors[2])[1000:4321]
    sources = [io.BytesIO(blobs[0]), ReadOnly(blobs[1]), io.BytesIO(blobs[2])]
    assert np.array_equal(sum_range(sources, 1000, 4321), expected)  # type: ignore[arg-type]


def test_sum_range_refuses_a_short_input() -> None:
    with pytest.raises(SecAggError) as caught:
        sum_range([io.BytesIO(bytes(400))], 0, 101)
    assert caught.value.code == "wrong_length"


@settings(max_examples=20, deadline=None)
@given(
    length=st.integers(4, 5000),
    offset_blocks=st.integers(0, 50),
    threads=st.integers(2, 4),
    adds=st.integers(0, 3),
    subtracts=st.integers(0, 3),
)
def test_masks_applied_on_threads_equal_masks_applied_on_one(
    length: int, offset_blocks: int, threads: int, adds: int, subtracts: int
) -> None:
    """A vector cut into ranges masked at once (each from its own offset in every stream)
    gets exactly the words one thread gives it, whatever the cut."""
    start = np.arange(length, dtype=np.uint32) * np.uint32(2654435761)
    add, subtract = [key(i) for i in range(adds)], [key(10 + i) for i in range(subtracts)]
    one, many = start.copy(), start.copy()
    apply_masks(one, add=add, subtract=subtract, offset=4 * offset_blocks, threads=1)
    original = prg.PARALLEL_MIN_WORDS
    prg.PARALLEL_MIN_WORDS = 1  # cut even a short vector
    try:
        apply_masks(
            many,
            add=add,
            subtract=subtract,
            offset=4 * offset_blocks,
            threads=threads,
            chunk_words=64,
        )
    finally:
        prg.PARALLEL_MIN_WORDS = original
    assert np.array_equal(many, one)


def test_a_large_vector_is_masked_on_several_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Above the threshold the work goes to the pool (and comes out equal to one thread's)."""
    ranges: list[tuple[int, int]] = []
    apply = prg._apply

    def counted(acc: np.ndarray, *args: object) -> None:
        ranges.append((int(args[2]), len(acc)))  # type: ignore[call-overload]
        apply(acc, *args)  # type: ignore[arg-type]

    vector = np.arange(3 * prg.PARALLEL_MIN_WORDS // 2, dtype=np.uint32)
    expected = vector.copy()
    apply_masks(expected, add=[key(1)], subtract=[key(2)], threads=1)
    monkeypatch.setattr(prg, "_apply", counted)
    apply_masks(vector, add=[key(1)], subtract=[key(2)], threads=2)
    assert np.array_equal(vector, expected)
    assert len(ranges) == 2 and sum(size for _, size in ranges) == len(vector)
    assert sorted(offset for offset, _ in ranges)[1] % 4 == 0
