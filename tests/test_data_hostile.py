"""Hostile files for the data readers: pickle bombs, gzip bombs, shared buffers, deep nesting.

Each file is written by hand, opcode by opcode or member by member, as an
attacker would; every one must be refused with a ValueError naming the file,
quickly and without spending memory out of proportion to the file.
"""
from __future__ import annotations

import gzip
import io
import pickle
import pickletools
import struct
import time
import tracemalloc

import numpy as np
import pytest

from lepton_kernels import data as D

# --------------------------------------------------------------------------- pickle graphs


def _memo_bomb(levels: int, width: int = 4) -> bytes:
    """{b"data": L, b"labels": []} where L_k is a list of ``width`` memo references to L_(k-1).

    The file grows by 11 bytes a level; the tree it describes by a factor ``width``
    (12 levels: 174 bytes and 16.7 million leaves).
    """
    b = b"\x80\x02}q\x00(C\x04dataq\x01]q\x020"  # PROTO 2, dict, MARK, key, L0 = [] memoized at 2, POP
    for k in range(1, levels + 1):  # MARK, BINGET k+1 (x width), LIST, BINPUT k+2, POP
        b += b"(" + (b"h" + bytes([k + 1])) * width + b"lq" + bytes([k + 2]) + b"0"
    return b + b"h" + bytes([levels + 2]) + b"C\x06labels]u."


def _hash_bomb(levels: int) -> bytes:
    """{T_levels: 1} with T_k = (T_(k-1), T_(k-1)) through the memo: hashing the key walks 2**levels tuples."""
    b = b"\x80\x02}q\x00)q\x010"  # PROTO 2, dict, T0 = () memoized at 1, POP
    for k in range(1, levels + 1):
        b += (b"h" + bytes([k])) * 2 + b"\x86q" + bytes([k + 1]) + b"0"  # BINGET twice, TUPLE2, BINPUT, POP
    return b + b"h" + bytes([levels + 1]) + b"K\x01s."  # BINGET T_levels, 1, SETITEM, STOP


def _refused_fast(path, match="not a readable CIFAR-10"):
    start = time.perf_counter()
    with pytest.raises(ValueError, match=match) as info:
        D.read_cifar10_python(path)
    assert time.perf_counter() - start < 5.0  # generous: the unguarded reader ran for minutes
    assert str(path) in str(info.value)
    return str(info.value)


def test_memo_reuse_pickle_bomb_is_refused(tmp_path):
    blob = _memo_bomb(12)
    pickletools.dis(blob, out=io.StringIO())  # a valid pickle, not a malformed one
    (tmp_path / "bomb").write_bytes(blob)
    assert "referenced twice" in _refused_fast(tmp_path / "bomb")


def test_hash_bomb_in_a_dict_key_is_refused(tmp_path):
    (tmp_path / "bomb").write_bytes(_hash_bomb(24))  # unguarded: 2**24 tuples hashed, then materialized (> 5 s, > 1 GB)
    assert "referenced twice" in _refused_fast(tmp_path / "bomb")


def test_dup_of_a_container_is_refused(tmp_path):
    # PROTO 2, dict, MARK, key, EMPTY_LIST, DUP, APPEND (the list into itself), key, EMPTY_LIST, SETITEMS
    (tmp_path / "dup").write_bytes(b"\x80\x02}(C\x04data]2aC\x06labels]u.")
    assert "referenced twice" in _refused_fast(tmp_path / "dup")


def test_deep_nesting_is_refused_before_unpickling(tmp_path):
    depth = 100_000  # hashing or freeing this many nested tuples recursively could overflow the C stack
    blob = b"\x80\x02}(C\x04data" + b")" + b"\x85" * depth + b"C\x06labels]u."
    (tmp_path / "deep").write_bytes(blob)
    assert "nested more than" in _refused_fast(tmp_path / "deep")


def _array_opcodes(raw_opcodes: bytes, n: int) -> bytes:
    """numpy.core.multiarray._reconstruct of a uint8 (n,) array whose bytes ``raw_opcodes`` push."""
    return (b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85C\x01b\x87R"
            b"(K\x01J" + struct.pack("<i", n) + b"\x85cnumpy\ndtype\nC\x02u1K\x00K\x01\x87R"
            b"(K\x03C\x01|NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89" + raw_opcodes + b"tb")


def test_one_buffer_shared_by_many_arrays_is_refused(tmp_path):
    n = 1 << 20
    raw = b"\x42" * n
    blob = b"\x80\x02}(C\x04data" + _array_opcodes(b"B" + struct.pack("<I", n) + raw + b"q\x01", n)
    for i in range(300):  # 300 more arrays over the same 1 MiB buffer: 300 MiB from a 1 MiB file
        blob += b"C\x04k%03d" % i + _array_opcodes(b"h\x01", n)
    blob += b"C\x06labels]u."
    (tmp_path / "shared").write_bytes(blob)
    tracemalloc.start()
    try:
        message = _refused_fast(tmp_path / "shared")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "more bytes than the file" in message
    assert peak < 64 * n, peak


def test_genuine_batches_with_repeated_strings_and_dtypes_still_load(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, (4, 3072), dtype=np.uint8)
    batch = {b"data": data, b"labels": [1, 2, 3, 4], b"filenames": [b"same.png"] * 4,
             b"extra": np.zeros(2, np.uint8), b"batch_label": b"training batch 1 of 5"}
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        (tmp_path / "b").write_bytes(pickle.dumps(batch, protocol=protocol))
        x, y = D.read_cifar10_python(tmp_path / "b")
        np.testing.assert_array_equal(x.reshape(4, -1), data)
        assert y.tolist() == [1, 2, 3, 4]


# --------------------------------------------------------------------------- gzip bombs


def _gzip_bomb(megabytes: int) -> bytes:
    """Concatenated gzip members (RFC 1952 allows several), each 1 MiB of zeros in about 1 KiB."""
    return gzip.compress(b"\0" * (1 << 20)) * megabytes


@pytest.mark.parametrize("reader", [D.read_cifar10_python, D.read_cifar10_binary])
def test_gzip_bomb_stops_at_what_a_cifar_file_can_hold(tmp_path, reader):
    (tmp_path / "bomb").write_bytes(_gzip_bomb(5000))  # 5 MB that would expand to 5 GiB
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(ValueError, match="larger than") as info:
            reader(tmp_path / "bomb")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - start < 5.0
    assert str(tmp_path / "bomb") in str(info.value)
    assert peak < 600 * 2**20, peak  # the whole CIFAR-10 set in one file is about 200 MB


def test_gzip_bomb_stops_at_the_size_an_idx_header_declares(tmp_path):
    header = bytes([0, 0, 0x08, 3]) + struct.pack(">III", 10, 28, 28)  # uint8 10x28x28: 7,840 data bytes
    member = gzip.compress(b"\0" * (1 << 20))
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(header) + member * 3000)
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="header declares"):
            D.read_idx(tmp_path / "train-images-idx3-ubyte.gz")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * 2**20, peak


def test_gzipped_idx_of_exactly_the_declared_size_reads(tmp_path):
    arr = np.arange(3 * 5 * 7, dtype=np.uint8).reshape(3, 5, 7)
    raw = bytes([0, 0, 0x08, 3]) + struct.pack(">III", 3, 5, 7) + arr.tobytes()
    (tmp_path / "a.gz").write_bytes(gzip.compress(raw[:20]) + gzip.compress(raw[20:]))  # two members
    np.testing.assert_array_equal(D.read_idx(tmp_path / "a.gz"), arr)
