"""Model files: safetensors round trip, metadata, atomic writes, and refusal of bad files."""
from __future__ import annotations

import hashlib
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


def _published_sha256(meta, tensors):
    """The format-2 checksum written out from its published definition (io.model_file_sha256's docstring)."""
    h = hashlib.sha256(b"lepton_kernels model file 2\0")
    fields = {k: v for k, v in meta.items() if k != "sha256"}
    h.update(json.dumps(fields, sort_keys=True, ensure_ascii=True, separators=(",", ":")).encode() + b"\0")
    for name in sorted(tensors):
        arr = np.ascontiguousarray(tensors[name])
        code = _CODES[arr.dtype.str[1:]]
        h.update(json.dumps([name, code, list(arr.shape)], separators=(",", ":")).encode() + b"\0")
        h.update(struct.pack("<Q", arr.nbytes) + arr.astype(arr.dtype.newbyteorder("<")).tobytes())
    return h.hexdigest()


_CODES = {"f4": "F32", "f8": "F64", "i8": "I64", "u1": "U8", "b1": "BOOL", "i1": "I8", "i4": "I32"}


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
    meta = _header(path)[2]["__metadata__"]
    assert info["sha256"] == meta["sha256"] == _published_sha256(meta, state)


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


# ----------------------------------------------------------------------- issue 15: model files
# Files below are written byte for byte as the safetensors format specifies (8-byte little-endian
# header length, JSON header padded with spaces, raw little-endian data), not with lkio.save.


def _write_safetensors(path, tensors, metadata):
    entries, offset, blobs = {"__metadata__": metadata}, 0, []
    for name, arr in tensors.items():
        raw = np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<")).tobytes()
        entries[name] = {"dtype": _CODES[arr.dtype.str[1:]], "shape": list(arr.shape),
                         "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(entries).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(blobs))
    return path


def _model_file(path, architecture, tensors, *, version="2", extra=None, sha=None):
    """A lepton_kernels model file with a correct (or the given) checksum: what an attacker can forge."""
    meta = {"format": "lepton_kernels", "format_version": version, "version": "0",
            "architecture": json.dumps(architecture), "names": json.dumps(list(tensors)), **(extra or {})}
    meta["sha256"] = sha or (_published_sha256(meta, tensors) if version == "2" else lkio.state_dict_sha256(tensors))
    return _write_safetensors(path, tensors, meta)


def _same_model(a, b):
    assert type(a) is type(b) and a.config() == b.config() and a.training == b.training
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert sa[k].dtype == sb[k].dtype
        np.testing.assert_array_equal(sa[k], sb[k])


def _flips(raw, positions):
    """(position, damaged bytes) for one changed byte per position, cycling through the bit masks."""
    masks = (0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80, 0xFF, 0x21)
    for i, pos in enumerate(positions):
        flipped = bytearray(raw)
        flipped[pos] ^= masks[i % len(masks)]
        yield pos, bytes(flipped)


@pytest.mark.parametrize("model_name, stride", [("LogisticRegression", 1), ("DigitsCNN", 0)])
def test_any_damaged_byte_is_a_value_error_or_the_identical_model(tmp_path, model_name, stride):
    import lepton_kernels as lk
    from lepton_kernels import models

    model = models.LogisticRegression(3, 2, seed=0) if model_name == "LogisticRegression" else \
        models.DigitsCNN(seed=0)
    good = lk.save(model, tmp_path / "good.lk", metadata={"split_seed": "7"})
    raw = good.read_bytes()
    reference = lk.load(good)
    header_end = 8 + struct.unpack("<Q", raw[:8])[0]
    # every byte of a small file; for the CNN every header byte and a dense sample of the data
    positions = range(len(raw)) if stride else [*range(header_end), *range(header_end, len(raw), 1009)]
    bad, loaded_intact = tmp_path / "bad.lk", 0
    for pos, damaged in _flips(raw, positions):
        bad.write_bytes(damaged)
        try:
            loaded = lk.load(bad)
        except ValueError:
            continue
        assert not isinstance(loaded, dict), f"byte {pos}: a damaged file loaded as a plain state dict"
        _same_model(loaded, reference)
        loaded_intact += 1
    assert loaded_intact <= header_end - 8  # only layout bytes (JSON whitespace) may change harmlessly


def test_edited_architecture_without_new_checksum_is_refused(tmp_path):
    from lepton_kernels import models

    model = models.DigitsCNN(seed=0)
    state = model.state_dict()
    good = _model_file(tmp_path / "g.lk", model.config(), state)
    meta = _header(good)[2]["__metadata__"]
    for edit in ({"class": "DigitsCNN", "arguments": {"num_classes": 10, "dropout": 0.75}},  # another dropout
                 {"class": "DigitsCNM", "arguments": {"num_classes": 10, "dropout": 0.25}}):  # -> plain dict
        _model_file(tmp_path / "e.lk", edit, state, sha=meta["sha256"])
        with pytest.raises(ValueError, match="checksum mismatch"):
            lkio.load(tmp_path / "e.lk")
    _model_file(tmp_path / "m.lk", model.config(), state, extra={"split_seed": "8"}, sha=meta["sha256"])
    with pytest.raises(ValueError, match="checksum mismatch"):
        lkio.load(tmp_path / "m.lk")


def _peak_bytes(fn):
    import tracemalloc

    tracemalloc.start()
    try:
        fn()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def test_forged_num_classes_is_refused_before_anything_is_built(tmp_path):
    """num_classes=10**7 with a recomputed checksum once cost 20 s and 7 GB: now refused up front."""
    import lepton_kernels as lk
    from lepton_kernels import models

    model = models.LeNet5(seed=0)
    forged = _model_file(tmp_path / "f.lk", {"class": "LeNet5", "arguments": {"num_classes": 10**7}},
                         model.state_dict())

    def load():
        with pytest.raises(ValueError, match=r"needs tensor '11.weight' of shape \[10000000, 84\]"):
            lk.load(forged)

    assert _peak_bytes(load) < 4 * forged.stat().st_size + (1 << 20)


@pytest.mark.parametrize("arguments, match", [
    ({"num_classes": "10"}, "non-negative integer"),
    ({"num_classes": -1}, "non-negative integer"),
    ({"num_classes": 10, "layers": 3}, "bad arguments"),
    ({"num_classes": 9}, "shape"),
])
def test_recorded_arguments_must_imply_the_files_tensors(tmp_path, arguments, match):
    from lepton_kernels import models

    path = _model_file(tmp_path / "a.lk", {"class": "LeNet5", "arguments": arguments},
                       models.LeNet5(seed=0).state_dict())
    with pytest.raises(ValueError, match=match):
        lkio.load(path)


def test_extra_or_missing_tensors_for_a_recorded_model_are_refused(tmp_path):
    from lepton_kernels import models

    model = models.LinearRegression(4, seed=0)
    state = dict(model.state_dict())
    _model_file(tmp_path / "x.lk", model.config(), {**state, "extra": np.zeros(10**5, np.float32)})
    with pytest.raises(ValueError, match=r"tensors \['extra'\] that the recorded architecture"):
        lkio.load(tmp_path / "x.lk")
    del state["0.bias"]
    _model_file(tmp_path / "m.lk", model.config(), state)
    with pytest.raises(ValueError, match="'0.bias' of shape \\[1\\], the file has no such tensor"):
        lkio.load(tmp_path / "m.lk")


def test_save_refuses_what_load_would_refuse(tmp_path):
    from lepton_kernels import models

    state = models.LeNet5(seed=0).state_dict()
    with pytest.raises(ValueError, match=r"save: .*needs tensor '11.weight' of shape \[7, 84\]"):
        lkio.save(state, tmp_path / "a.lk", architecture={"class": "LeNet5", "arguments": {"num_classes": 7}})
    deep = []
    for _ in range(100):
        deep = [deep]
    with pytest.raises(ValueError, match="nests more than 64 levels"):
        lkio.save({"w": np.zeros(1)}, tmp_path / "d.lk", architecture=deep)
    for _ in range(10**4):
        deep = [deep]
    with pytest.raises(ValueError, match="nests more than 64 levels"):
        lkio.save({"w": np.zeros(1)}, tmp_path / "d.lk", architecture=deep)
    assert os.listdir(tmp_path) == []


def test_forged_float_layer_of_a_quantized_model_is_refused_before_building(tmp_path):
    import lepton_kernels as lk

    layer = {"class": "FloatLayer", "activation": None,
             "layer": {"class": "Linear", "in_features": 10**5, "out_features": 10**5, "bias": True}}
    architecture = {"class": "QuantizedModel", "format": 1, "flatten_input": False, "source": None,
                    "layers": [layer]}
    path = _model_file(tmp_path / "q.lk", architecture, {"0.layer.weight": np.zeros((4, 4), np.float32),
                                                         "0.layer.bias": np.zeros(4, np.float32)})

    def load():
        with pytest.raises(ValueError, match=r"0.layer.weight' of shape \[100000, 100000\]"):
            lk.load(path)

    assert _peak_bytes(load) < 1 << 20


def test_model_shape_bound_matches_every_model_builder():
    """io's table of implied parameters is exactly what each models.MODELS class creates."""
    from lepton_kernels import models

    assert set(lkio._MODEL_SHAPES) == set(models.MODELS)
    for name, cls in models.MODELS.items():
        for arguments in ({}, {"num_classes": 1}, {"num_classes": 13}, {"in_features": 7},
                          {"in_features": 5, "out_features": 3}, {"in_features": 2, "num_classes": 4}):
            try:
                model = cls(**arguments, seed=0)
            except TypeError:
                continue  # arguments this class does not take (or a required one missing)
            built = {k: tuple(v.shape) for k, v in model.state_dict().items()}
            assert lkio._model_shapes(name, model.config()["arguments"]) == built, (name, arguments)


@pytest.mark.parametrize("name", ["LeNet5", "CifarCNN", "DigitsCNN", "LinearRegression", "LogisticRegression"])
def test_every_model_round_trips_through_lk_load(tmp_path, name):
    import lepton_kernels as lk
    from lepton_kernels import models

    cls = models.MODELS[name]
    model = cls(6, seed=1) if name in ("LinearRegression", "LogisticRegression") else cls(num_classes=7, seed=1)
    _same_model(lk.load(lk.save(model, tmp_path / "m.lk")), model.eval())


@pytest.mark.parametrize("where", ["header", "architecture", "names"])
def test_deeply_nested_json_is_a_value_error(tmp_path, where):
    deep = "[" * 100_000 + "]" * 100_000
    if where == "header":
        text = ('{"__metadata__": {"format": "lepton_kernels"}, "x": ' + deep + "}").encode()
        path = tmp_path / "h.lk"
        path.write_bytes(struct.pack("<Q", len(text)) + text)
    else:
        tensors = {"w": np.zeros(2, np.float32)}
        meta = {"format": "lepton_kernels", "format_version": "2", "version": "0",
                "architecture": deep if where == "architecture" else "null",
                "names": deep if where == "names" else '["w"]'}
        meta["sha256"] = _published_sha256(meta, tensors)
        path = _write_safetensors(tmp_path / "a.lk", tensors, meta)
    with pytest.raises(ValueError, match=r"nests 10000[01] levels deep"):
        lkio.load(path)


def test_nesting_bound_ignores_brackets_inside_strings(tmp_path):
    arch = {"name": "[" * 500 + '\\"{' * 300, "nested": [[[[1]]]]}
    path = _model_file(tmp_path / "s.lk", arch, {"w": np.zeros(2, np.float32)})
    assert lkio.load(path)[1]["architecture"] == arch


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs os.mkfifo")
def test_fifo_is_refused_without_blocking(tmp_path):
    import threading

    fifo = tmp_path / "model.lk"
    os.mkfifo(fifo)
    outcome = []

    def load():
        try:
            lkio.load(fifo)
        except ValueError as exc:
            outcome.append(exc)

    reader = threading.Thread(target=load, daemon=True)
    reader.start()
    reader.join(1.0)
    if reader.is_alive():  # unblock the stuck reader so the test run can go on
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        reader.join(5.0)
        pytest.fail("lkio.load blocked on a FIFO")
    assert outcome and "not a regular file" in str(outcome[0]) and str(fifo) in str(outcome[0])


def test_device_file_is_refused(tmp_path):
    if not os.path.exists("/dev/zero"):
        pytest.skip("no /dev/zero")
    _expect("/dev/zero", "not a regular file")


# A child process that is SIGKILLed while lk.save writes: os.fsync never returns there (a disk
# that hangs), so the kill lands mid-save every time, after the data went into the temporary file.
_KILLED_SAVE = """
import os, sys, time
import numpy as np
from lepton_kernels import io as lkio

def hang(fd):
    print("writing", flush=True)
    time.sleep(600)

lkio.os.fsync = hang
lkio.save({"w": np.ones(4_000_000, np.float32)}, sys.argv[1])
"""


def _killed_save(target):
    import signal
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", _KILLED_SAVE, str(target)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "writing"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(30)
        child.stdout.close()


def _temporaries(directory, target_name):
    return sorted(n for n in os.listdir(directory) if n.startswith(f".{target_name}.") and n.endswith(".tmp"))


@pytest.mark.skipif(os.name != "posix", reason="flock-based clean-up is POSIX only")
def test_next_save_removes_temporaries_of_killed_saves(tmp_path):
    target = tmp_path / "big.lk"
    for _ in range(3):  # each killed save also starts by removing what the one before left
        _killed_save(target)
    stale = _temporaries(tmp_path, target.name)
    assert len(stale) == 1 and (tmp_path / stale[0]).stat().st_size >= 16_000_000
    assert not target.exists()
    lkio.save({"w": np.zeros(3, np.float32)}, target)
    assert _temporaries(tmp_path, target.name) == []
    np.testing.assert_array_equal(lkio.load(target)[0]["w"], np.zeros(3, np.float32))


@pytest.mark.skipif(os.name != "posix", reason="flock-based clean-up is POSIX only")
def test_save_keeps_a_live_writers_temporary_and_files_that_are_not_its_own(tmp_path):
    import fcntl

    target = tmp_path / "m.lk"
    live = tmp_path / ".m.lk.abc_1234.tmp"
    live.write_bytes(b"being written")
    others = [".m.lk.not-temp.tmp", ".m.lk.abc123456.tmp", ".m.lk.abc12345.tmp.keep", "m.lk.abc12345.tmp",
              ".m.lk.ABC12345.tmp"]
    for name in others:
        (tmp_path / name).write_bytes(b"user data")
    with open(live, "rb") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)  # what a save in progress holds
        lkio.save({"w": np.zeros(3)}, target)
        assert live.exists()
    lkio.save({"w": np.ones(3)}, target)  # the writer is gone: its lock is free
    assert not live.exists()
    assert sorted(os.listdir(tmp_path)) == sorted(others + [target.name])


def _legacy_file(path):
    """A format_version 1 file, as lepton_kernels wrote them before (checksum over the data only)."""
    from lepton_kernels import models

    model = models.LinearRegression(3, seed=0)
    return _model_file(path, model.config(), dict(model.state_dict()), version="1"), model


def test_format_1_files_are_refused_with_how_to_resave(tmp_path):
    import lepton_kernels as lk

    path, _ = _legacy_file(tmp_path / "old.lk")
    for loader in (lkio.load, lk.load):
        with pytest.raises(ValueError, match=r"format_version '1'.*re-save it.*legacy=True") as info:
            loader(path)
        assert str(path) in str(info.value)


def test_format_1_file_loads_with_legacy_and_resaves_as_format_2(tmp_path):
    import lepton_kernels as lk

    path, model = _legacy_file(tmp_path / "old.lk")
    state, info = lkio.load(path, legacy=True)
    assert info["format_version"] == "1"
    lk.save(state, path, architecture=info["architecture"], metadata=info["metadata"])
    assert lkio.load(path)[1]["format_version"] == "2"
    _same_model(lk.load(path), model.eval())
    raw = bytearray(_legacy_file(tmp_path / "damaged.lk")[0].read_bytes())
    raw[-1] ^= 1
    (tmp_path / "damaged.lk").write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="checksum mismatch"):
        lkio.load(tmp_path / "damaged.lk", legacy=True)


def _true_depth(value):
    if isinstance(value, (list, dict)):
        children = value.values() if isinstance(value, dict) else value
        return 1 + max((_true_depth(c) for c in children), default=0)
    return 0


def test_json_depth_scanner_agrees_with_the_parsed_structure():
    hypothesis = pytest.importorskip("hypothesis")
    st = hypothesis.strategies
    tricky = st.text(alphabet='[]{}"\\ab\n\u00e9', max_size=12)
    values = st.recursive(st.none() | st.integers() | tricky,
                          lambda inner: st.lists(inner, max_size=4) | st.dictionaries(tricky, inner, max_size=4),
                          max_leaves=30)

    @hypothesis.settings(max_examples=300, deadline=None)
    @hypothesis.given(values, st.booleans())
    def check(value, ascii_only):
        raw = json.dumps(value, ensure_ascii=ascii_only).encode()
        assert lkio._json_depth(raw) == _true_depth(json.loads(raw))

    check()


@pytest.mark.skipif(os.name != "posix", reason="flock-based clean-up is POSIX only")
def test_concurrent_saves_of_one_target_never_remove_each_others_temporaries(tmp_path):
    from conftest import failures_in_threads

    target = tmp_path / "shared.lk"
    states = [{"w": np.full(50_000, i, np.float32)} for i in range(4)]

    def job(state):
        def save_then_check():
            lkio.save(state, target)
            return lkio.load(target)[0]["w"].shape  # whichever save won, a whole file
        return save_then_check, (50_000,)

    assert failures_in_threads([job(s) for s in states], workers=4, rounds=5) == []
    assert _temporaries(tmp_path, target.name) == []
