"""Model files: safetensors round trip, metadata, atomic writes, and refusal of bad files."""
from __future__ import annotations

import json
import os
import pickle
import struct

import numpy as np
import pytest

pytest.importorskip("safetensors")

from lepton_kernels import io as lkio  # noqa: E402


def _state(rng=None):
    rng = rng or np.random.default_rng(0)
    return {
        "conv.weight": rng.standard_normal((4, 1, 3, 3)).astype(np.float32),
        "conv.bias": rng.standard_normal(4).astype(np.float32),
        "fc.weight": rng.standard_normal((3, 5)),  # float64
        "steps": np.array([7, -3, 2**40], dtype=np.int64),
        "mask": rng.integers(0, 256, (2, 3), dtype=np.uint8),
        "scalar": np.array(1.5, dtype=np.float32),
        "empty": np.zeros((0, 3), dtype=np.float32),
        "flags": np.array([True, False]),
    }


def _saved(tmp_path, name="model.safetensors"):
    path = tmp_path / name
    lkio.save(_state(), path, architecture={"name": "tiny", "layers": [1, 2]})
    return path


def _header(path):
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return raw, n, json.loads(raw[8:8 + n])


def test_round_trip_preserves_values_dtypes_order(tmp_path):
    state = _state()
    path = tmp_path / "m.safetensors"
    assert lkio.save(state, path, architecture={"name": "tiny"}, metadata={"note": "hi"}) == path
    loaded, info = lkio.load(path)
    assert list(loaded) == list(state)
    for name, arr in state.items():
        assert loaded[name].dtype == arr.dtype and loaded[name].shape == arr.shape
        np.testing.assert_array_equal(loaded[name], arr)
        assert loaded[name].flags.writeable
    assert info["architecture"] == {"name": "tiny"}
    assert info["format"] == "lepton_kernels" and info["metadata"] == {"note": "hi"}
    assert info["sha256"] == lkio.state_dict_sha256(state)


def test_metadata_is_all_strings_and_describes_the_file(tmp_path):
    path = _saved(tmp_path)
    _, _, header = _header(path)
    meta = header["__metadata__"]
    assert all(isinstance(v, str) for v in meta.values())
    assert meta["format"] == "lepton_kernels"
    assert json.loads(meta["architecture"]) == {"layers": [1, 2], "name": "tiny"}
    assert len(meta["sha256"]) == 64 and "version" in meta


def test_checksum_is_order_independent_and_content_sensitive():
    a = _state()
    b = dict(reversed(list(a.items())))
    assert lkio.state_dict_sha256(a) == lkio.state_dict_sha256(b)
    c = dict(a, **{"conv.bias": a["conv.bias"].astype(np.float64)})
    assert lkio.state_dict_sha256(a) != lkio.state_dict_sha256(c)
    d = dict(a, **{"conv.bias": a["conv.bias"].reshape(2, 2)})
    assert lkio.state_dict_sha256(a) != lkio.state_dict_sha256(d)


def test_model_object_with_state_dict_and_config(tmp_path):
    class Model:
        def state_dict(self):
            return {"w": np.ones((2, 2), np.float32)}

        def config(self):
            return {"name": "Model", "in": 2}

    class Model2:
        architecture = {"name": "Model2"}

        def state_dict(self):
            return {"w": np.ones(3)}

    lkio.save(Model(), tmp_path / "a.st")
    assert lkio.load(tmp_path / "a.st")[1]["architecture"] == {"name": "Model", "in": 2}
    lkio.save(Model2(), tmp_path / "b.st")
    assert lkio.load(tmp_path / "b.st")[1]["architecture"] == {"name": "Model2"}


def test_non_contiguous_and_big_endian_inputs(tmp_path):
    base = np.arange(12, dtype=">f4").reshape(3, 4)
    state = {"t": base.T, "be": base}
    lkio.save(state, tmp_path / "m")
    loaded, _ = lkio.load(tmp_path / "m")
    np.testing.assert_array_equal(loaded["t"], base.T)
    np.testing.assert_array_equal(loaded["be"], base)
    assert loaded["be"].dtype == np.float32


@pytest.mark.parametrize("bad, exc", [
    ({"x": np.array(["a"])}, TypeError),
    ({"x": np.zeros(2, np.complex64)}, TypeError),
    ({1: np.zeros(2)}, TypeError),
    ({"__metadata__": np.zeros(2)}, ValueError),
    ([1, 2], TypeError),
])
def test_save_refuses_bad_state_dicts(tmp_path, bad, exc):
    with pytest.raises(exc):
        lkio.save(bad, tmp_path / "m")
    assert not os.listdir(tmp_path)


def test_save_refuses_bad_metadata(tmp_path):
    with pytest.raises(ValueError, match="reserved"):
        lkio.save({"x": np.zeros(1)}, tmp_path / "m", metadata={"sha256": "0"})
    with pytest.raises(TypeError):
        lkio.save({"x": np.zeros(1)}, tmp_path / "m", metadata={"k": 1})
    with pytest.raises(TypeError, match="architecture"):
        lkio.save({"x": np.zeros(1)}, tmp_path / "m", architecture={"f": object()})


def test_failed_write_leaves_original_intact_and_no_temp(tmp_path, monkeypatch):
    path = _saved(tmp_path)
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise OSError("simulated crash during fsync")

    monkeypatch.setattr(lkio.os, "fsync", crash)
    with pytest.raises(OSError, match="simulated"):
        lkio.save({"other": np.zeros(5)}, path)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == [path.name]
    lkio.load(path)


def test_failed_replace_leaves_no_temp(tmp_path, monkeypatch):
    path = _saved(tmp_path)
    before = path.read_bytes()
    monkeypatch.setattr(lkio.os, "replace", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        lkio.save({"other": np.zeros(5)}, path)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == [path.name]


def test_overwrite_replaces_atomically(tmp_path):
    path = _saved(tmp_path)
    lkio.save({"new": np.arange(3)}, path)
    assert list(lkio.load(path)[0]) == ["new"]
    assert os.listdir(tmp_path) == [path.name]


# ----------------------------------------------------------------------- bad files -> ValueError


def _expect(path, match):
    with pytest.raises(ValueError, match=match) as info:
        lkio.load(path)
    assert str(path) in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        lkio.load(tmp_path / "nope")
    with pytest.raises(FileNotFoundError):
        lkio.load(tmp_path / "nope")


def test_empty_file(tmp_path):
    (tmp_path / "e").write_bytes(b"")
    _expect(tmp_path / "e", "empty")


def test_tiny_file(tmp_path):
    (tmp_path / "t").write_bytes(b"\x01\x02\x03")
    _expect(tmp_path / "t", "too short")


@pytest.mark.parametrize("keep", [4, 8, 20, -1, -7])
def test_truncated_file(tmp_path, keep):
    raw = _saved(tmp_path).read_bytes()
    bad = tmp_path / "trunc"
    bad.write_bytes(raw[:keep])
    with pytest.raises(ValueError):
        lkio.load(bad)


def test_truncated_data_is_named(tmp_path):
    raw = _saved(tmp_path).read_bytes()
    (tmp_path / "t").write_bytes(raw[:-3])
    _expect(tmp_path / "t", "truncated|out of range")


def test_trailing_bytes(tmp_path):
    raw = _saved(tmp_path).read_bytes()
    (tmp_path / "t").write_bytes(raw + b"\0\0")
    _expect(tmp_path / "t", "unexpected bytes")


@pytest.mark.parametrize("seed", range(5))
def test_random_bytes(tmp_path, seed):
    rng = np.random.default_rng(seed)
    (tmp_path / "r").write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(ValueError):
        lkio.load(tmp_path / "r")


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_pickle_file_is_refused_without_unpickling(tmp_path, protocol):
    class Boom:
        def __reduce__(self):
            return (os.remove, (str(tmp_path / "canary"),))

    (tmp_path / "canary").write_text("alive")
    (tmp_path / "p.pkl").write_bytes(pickle.dumps({"w": np.zeros(3), "x": Boom()}, protocol=protocol))
    _expect(tmp_path / "p.pkl", "pickle")
    assert (tmp_path / "canary").exists()


def test_zip_checkpoint_is_refused(tmp_path):
    (tmp_path / "c.pt").write_bytes(b"PK\x03\x04" + b"\0" * 100)
    _expect(tmp_path / "c.pt", "zip")


def test_over_long_header(tmp_path):
    (tmp_path / "h").write_bytes(struct.pack("<Q", 200 * 1024 * 1024) + b"{}" + b" " * 30)
    _expect(tmp_path / "h", "exceeds the limit")


def test_header_longer_than_file(tmp_path):
    (tmp_path / "h").write_bytes(struct.pack("<Q", 5000) + b'{"__metadata__": {}}')
    _expect(tmp_path / "h", "larger than the rest of the file")


def test_custom_header_limit(tmp_path):
    path = _saved(tmp_path)
    with pytest.raises(ValueError, match="exceeds the limit"):
        lkio.load(path, max_header_bytes=16)


def _rewrite_header(src, dst, edit):
    raw, n, header = _header(src)
    header = edit(header)
    text = json.dumps(header).encode() if not isinstance(header, bytes) else header
    dst.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + n:])


def test_invalid_json_header(tmp_path):
    src = _saved(tmp_path)
    _rewrite_header(src, tmp_path / "j", lambda h: b'{"a": [1, 2,,]}')
    _expect(tmp_path / "j", "not valid JSON")
    _rewrite_header(src, tmp_path / "u", lambda h: b"{\xff\xfe}")
    _expect(tmp_path / "u", "UTF-8")
    _rewrite_header(src, tmp_path / "d", lambda h: b'{"a": 1, "a": 2}')
    _expect(tmp_path / "d", "duplicate")


def test_offsets_out_of_range(tmp_path):
    def edit(h):
        h["conv.bias"]["data_offsets"][1] += 10**6
        return h
    _rewrite_header(_saved(tmp_path), tmp_path / "o", edit)
    _expect(tmp_path / "o", "out of range")


def test_overlapping_offsets(tmp_path):
    def edit(h):
        h["conv.bias"]["data_offsets"] = list(h["conv.weight"]["data_offsets"][:1]) * 1 + [
            h["conv.weight"]["data_offsets"][0] + 16]
        return h
    _rewrite_header(_saved(tmp_path), tmp_path / "o", edit)
    with pytest.raises(ValueError, match="overlaps|gap|unexpected bytes"):
        lkio.load(tmp_path / "o")


def test_shape_offset_mismatch_and_bad_dtype(tmp_path):
    src = _saved(tmp_path)

    def shape(h):
        h["conv.bias"]["shape"] = [5]
        return h

    def dtype(h):
        h["conv.bias"]["dtype"] = "BF16"
        return h

    _rewrite_header(src, tmp_path / "s", shape)
    _expect(tmp_path / "s", "needs")
    _rewrite_header(src, tmp_path / "d", dtype)
    _expect(tmp_path / "d", "unsupported dtype")


def test_foreign_safetensors_file(tmp_path):
    import safetensors.numpy as stn

    (tmp_path / "f").write_bytes(stn.save({"w": np.zeros(3)}, metadata={"format": "pt"}))
    _expect(tmp_path / "f", "not a lepton_kernels model file")


@pytest.mark.parametrize("which", ["first", "middle", "last"])
def test_bit_flip_in_data_is_a_checksum_mismatch(tmp_path, which):
    raw, n, _ = _header(_saved(tmp_path))
    data_start = 8 + n
    pos = {"first": data_start, "middle": (data_start + len(raw)) // 2, "last": len(raw) - 1}[which]
    flipped = bytearray(raw)
    flipped[pos] ^= 0x10
    (tmp_path / "b").write_bytes(bytes(flipped))
    _expect(tmp_path / "b", "checksum mismatch")


def test_every_single_byte_corruption_is_a_value_error(tmp_path):
    raw = _saved(tmp_path).read_bytes()
    bad = tmp_path / "x"
    for pos in range(0, len(raw), 3):
        flipped = bytearray(raw)
        flipped[pos] ^= 0x01
        bad.write_bytes(bytes(flipped))
        try:
            loaded, _ = lkio.load(bad)
        except ValueError:
            continue
        # only a flip that leaves the tensors intact (e.g. in JSON padding) may load
        for name, arr in _state().items():
            np.testing.assert_array_equal(loaded[name], arr)


def test_directory_is_refused(tmp_path):
    _expect(tmp_path, "directory")
