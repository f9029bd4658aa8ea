"""trine.host.program: the Program container, input quantisation, the .trine format, fit checks."""

import os
import struct
import warnings
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from trine.contract.network import run_network
from trine.contract.params import DeviceLimits
from trine.contract.reference import Conv, Flatten, Layer, MaxPool
from trine.contract.spec import MAX_FAN_IN, SPEC_VERSION, pack_trits
from trine.host.program import (
    MAGIC,
    Program,
    ProgramError,
    ProgramFormatError,
    ProgramTooLargeError,
)

# --------------------------------------------------------------------------------------------
# Programs to test with
# --------------------------------------------------------------------------------------------


def random_layer(rng, m, k, shift=0, relu=False, bias_range=100):
    w = rng.integers(-1, 2, size=(m, k))
    return Layer(w, rng.integers(-bias_range, bias_range + 1, size=m), shift, relu)


def sample_program(scale=0.25, labels=("cat", "dög")):
    """5 -> 3 -> 2. Byte offsets: header 24, layer 0 at 24 (10 + 12 bias + 3 weights),
    layer 1 at 49 (10 + 8 bias + 2 weights), trailer at 69."""
    rng = np.random.default_rng(7)
    layers = [random_layer(rng, 3, 5, shift=2, relu=True), random_layer(rng, 2, 3, shift=1)]
    return Program(layers, scale, None if labels is None else list(labels))


@st.composite
def programs(draw):
    n = draw(st.integers(1, 4))
    widths = draw(st.lists(st.integers(1, 9), min_size=n + 1, max_size=n + 1))
    layers = []
    for k, m in zip(widths, widths[1:], strict=False):
        w = draw(hnp.arrays(np.int8, (m, k), elements=st.integers(-1, 1)))
        bias = draw(hnp.arrays(np.int64, (m,), elements=st.integers(-(2**31), 2**31 - 1)))
        if draw(st.booleans()):
            bias = bias % 41 - 20  # small biases, so that outputs are not all saturated
        layers.append(Layer(w, bias, draw(st.integers(0, 31)), draw(st.booleans())))
    scale = draw(st.none() | st.floats(1e-3, 1e3))
    labels = draw(st.none() | st.lists(st.text(max_size=5), min_size=m, max_size=m))
    return Program(layers, scale, labels)


def assert_same_program(p, q):
    assert q.n_layers == p.n_layers
    for a, b in zip(p.layers, q.layers, strict=True):
        assert np.array_equal(a.weights, b.weights)
        assert np.array_equal(a.bias, b.bias)
        assert (a.shift, a.relu) == (b.shift, b.relu)
    assert q.input_scale == p.input_scale
    assert q.labels == p.labels
    assert q == p


# --------------------------------------------------------------------------------------------
# Hand-crafted files: an encoder written from the format table, independent of trine.host.program
# --------------------------------------------------------------------------------------------


def header(n_layers, *, magic=MAGIC, version=1, spec=SPEC_VERSION):
    return magic + struct.pack("<HHQI", version, spec, 0, n_layers)


def layer(m, k, *, shift=0, relu=0, bias=None, weights=None):
    bias = bytes(4 * m) if bias is None else bias
    weights = pack_trits(np.zeros(m * k, np.int8)) if weights is None else weights
    return struct.pack("<IIBB", m, k, shift, relu) + bias + weights


def trailer(scale=None, labels=None, *, has_scale=None, has_labels=None, n_labels=None):
    out = struct.pack("<B", int(scale is not None) if has_scale is None else has_scale)
    if scale is not None:
        out += struct.pack("<d", scale)
    out += struct.pack("<B", int(labels is not None) if has_labels is None else has_labels)
    if labels is not None:
        out += struct.pack("<I", len(labels) if n_labels is None else n_labels)
        for raw in labels:
            out += struct.pack("<I", len(raw)) + raw
    return out


def seal(body, size=None):
    """Fill in file_size (the true one unless given) and append a valid CRC-32."""
    body = bytearray(body)
    struct.pack_into("<Q", body, 12, len(body) + 4 if size is None else size)
    return bytes(body) + struct.pack("<I", zlib.crc32(body))


def test_the_crafted_encoder_makes_valid_files():
    p = Program.from_bytes(seal(header(1) + layer(2, 3) + trailer(0.5, [b"a", b"b"])))
    assert (p.input_width, p.output_width, p.input_scale, p.labels) == (3, 2, 0.5, ("a", "b"))


def test_exact_byte_layout():
    w = np.array([[1, 0, -1], [0, 0, 1]])
    p = Program([Layer(w, [5, -7], 3, True)], input_scale=0.5, labels=["a", "bé"])
    # Digits t + 1, t0 least significant: [2,1,0,1,1] -> 113, [2,1,1,1,1] (tail padded) -> 122.
    assert pack_trits(w) == bytes([113, 122])
    body = (
        b"TRINE\x00\r\n"
        + struct.pack("<HHQI", 1, SPEC_VERSION, 0, 1)
        + struct.pack("<IIBB", 2, 3, 3, 1)
        + struct.pack("<ii", 5, -7)
        + bytes([113, 122])
        + b"\x01"
        + struct.pack("<d", 0.5)
        + b"\x01"
        + struct.pack("<I", 2)
        + struct.pack("<I", 1)
        + b"a"
        + struct.pack("<I", 3)
        + "bé".encode()
    )
    assert p.to_bytes() == seal(body)
    assert len(p.to_bytes()) == struct.unpack_from("<Q", p.to_bytes(), 12)[0]


# --------------------------------------------------------------------------------------------
# Construction
# --------------------------------------------------------------------------------------------


def test_properties():
    p = sample_program()
    assert (p.input_width, p.output_width, p.n_layers) == (5, 2, 2)
    assert p.labels == ("cat", "dög") and p.input_scale == 0.25
    assert isinstance(p.layers, tuple)
    assert "5 -> 3 -> 2" in repr(p)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"layers": []}, "at least one layer"),
        ({"layers": "abc"}, "layer 0 must be a trine.contract.reference.Layer, .*not str"),
        ({"layers": 3}, "layers must be a sequence"),
        ({"input_scale": 0.0}, "input_scale must be a positive finite number, not 0.0"),
        ({"input_scale": -1}, "input_scale must be a positive finite number, not -1"),
        ({"input_scale": float("nan")}, "input_scale must be a positive finite number"),
        ({"input_scale": float("inf")}, "input_scale must be a positive finite number"),
        ({"input_scale": 10**400}, "input_scale must be a positive finite number"),
        ({"input_scale": True}, "input_scale must be a positive finite number or None"),
        ({"input_scale": "1"}, "input_scale must be a positive finite number or None"),
        ({"labels": ["a"]}, "labels has 1 entries but the last layer has 2 outputs"),
        ({"labels": "ab"}, "labels must be a list of str or None, not str"),
        ({"labels": ["a", 2]}, "label 1 must be a str, not int"),
        ({"labels": ["a", "\ud800"]}, "label 1 cannot be encoded as UTF-8"),
    ],
)
def test_constructor_rejects(kwargs, message):
    args = {"layers": sample_program().layers, **kwargs}
    with pytest.raises(ProgramError, match=message):
        Program(**args)


def test_layers_must_chain():
    rng = np.random.default_rng(0)
    layers = [random_layer(rng, 3, 5), random_layer(rng, 2, 3), random_layer(rng, 2, 4)]
    with pytest.raises(ProgramError, match="layer 2 expects 4 inputs but layer 1 has 2 outputs"):
        Program(layers)


# --------------------------------------------------------------------------------------------
# Input quantisation and reference inference
# --------------------------------------------------------------------------------------------


def program_k5(scale):
    return Program([random_layer(np.random.default_rng(1), 2, 5)], input_scale=scale)


def test_quantize_rounds_ties_to_even():
    p = program_k5(1.0)
    q = p.quantize_input(np.array([0.5, 1.5, -0.5, 2.5, -1.5]))
    assert q.dtype == np.int8 and q.tolist() == [0, 2, 0, 2, -2]
    q = program_k5(0.5).quantize_input([0.25, 0.75, -0.25, 0.1, 1.0])
    assert q.tolist() == [0, 2, 0, 0, 2]


def test_quantize_clips():
    q = program_k5(1.0).quantize_input([127.5, -128.5, 1e9, -1e9, 126.49])
    assert q.tolist() == [127, -128, 127, -128, 126]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # x / scale overflowing to inf is expected, and clips
        q = program_k5(1e-300).quantize_input([1e300, -1e300, 0.0, 1e-300, 0.0])
    assert q.tolist() == [127, -128, 0, 1, 0]


def test_quantize_divides_in_float64():
    # float32(0.35) / 0.1 is 3.4999999 in float64 (-> 3), but exactly 3.5 in float32 (-> 4).
    x = np.full(5, 0.35, np.float32)
    assert program_k5(0.1).quantize_input(x).tolist() == [3] * 5


def test_integer_input_passes_through():
    p = program_k5(None)
    x = np.array([-128, -1, 0, 1, 127], np.int8)
    assert p.quantize_input(x) is x
    for dtype in (np.int16, np.int64, np.uint8):
        y = p.quantize_input(np.array([0, 1, 2, 3, 127], dtype))
        assert y.dtype == np.int8 and y.tolist() == [0, 1, 2, 3, 127]
    assert p.quantize_input([[1, 2, 3, 4, 5]] * 3).shape == (3, 5)


@pytest.mark.parametrize(
    ("x", "message"),
    [
        (np.array([0, 1, 200, 3, 4], np.uint8), r"in \[-128, 127\]: value 200 at 2"),
        ([[0, 0, 0, 0, 0], [0, 0, -129, 0, 0]], r"value -129 at \(1, 2\)"),
        ([0.0, 0.0, np.nan, 0.0, 0.0], "input must be finite: nan at 2"),
        ([[0.0] * 5, [0.0, -np.inf, 0.0, 0.0, 0.0]], r"input must be finite: -inf at \(1, 1\)"),
        ([1, 2, 3, 4], "input has 4 values per sample, the program expects 5"),
        (np.zeros((2, 2, 5)), r"shape \(K,\) or \(N, K\), not \(2, 2, 5\)"),
        (np.float64(1.0), r"shape \(K,\) or \(N, K\), not \(\)"),
        ([True] * 5, "integer or float array, not dtype bool"),
        (np.zeros(5, complex), "integer or float array, not dtype complex128"),
        (["a"] * 5, "integer or float array"),
        ([[1, 2], [3]], "rectangular"),
    ],
)
def test_quantize_rejects(x, message):
    with pytest.raises(ProgramError, match=message):
        program_k5(1.0).quantize_input(x)


def test_float_input_needs_a_scale():
    with pytest.raises(ProgramError, match="float input needs an input_scale"):
        program_k5(None).quantize_input(np.zeros(5))


def test_run_reference_is_quantize_then_run_network():
    p = sample_program()
    rng = np.random.default_rng(3)
    xf = rng.normal(0, 20, size=(16, 5))
    xi = rng.integers(-128, 128, size=(16, 5), dtype=np.int8)
    for x in (xf, xi):
        y = p.run_reference(x)
        assert y.dtype == np.int8 and y.shape == (16, 2)
        assert np.array_equal(y, run_network(p.quantize_input(x), p.layers))
        assert np.array_equal(p.run_reference(x[5]), y[5])
    expected = run_network(np.clip(np.rint(xf / 0.25), -128, 127).astype(np.int8), p.layers)
    assert np.array_equal(p.run_reference(xf), expected)


# --------------------------------------------------------------------------------------------
# Round trips
# --------------------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(programs(), st.data())
def test_round_trip(p, data):
    raw = p.to_bytes()
    q = Program.from_bytes(raw)
    assert_same_program(p, q)
    assert q.to_bytes() == raw
    assert Program.from_bytes(bytearray(raw)) == p and Program.from_bytes(memoryview(raw)) == p
    x = data.draw(hnp.arrays(np.int8, (3, p.input_width)))
    assert np.array_equal(q.run_reference(x), p.run_reference(x))
    if p.input_scale is not None:
        xf = data.draw(hnp.arrays(np.float64, (2, p.input_width), elements=st.floats(-1e4, 1e4)))
        assert np.array_equal(q.run_reference(xf), p.run_reference(xf))


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (7, 1), (3, 5)])
@pytest.mark.parametrize("extras", [(None, None), (0.125, "labels")])
def test_save_load(tmp_path, shape, extras):
    m, k = shape
    scale, labels = extras
    labels = [f"out {j} ✓" for j in range(m)] if labels else None
    rng = np.random.default_rng(m * 10 + k)
    p = Program([random_layer(rng, m, k, shift=5, relu=True, bias_range=2**31 - 1)], scale, labels)
    path = tmp_path / "net.trine"
    p.save(path)
    q = Program.load(str(path))
    assert_same_program(p, q)
    assert path.read_bytes() == p.to_bytes()
    x = rng.integers(-128, 128, size=(4, k), dtype=np.int8)
    assert np.array_equal(q.run_reference(x), p.run_reference(x))
    assert [f.name for f in tmp_path.iterdir()] == ["net.trine"]
    umask = os.umask(0o022)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_equality():
    assert sample_program() == sample_program()
    assert sample_program() != sample_program(scale=0.5)
    assert sample_program() != sample_program(labels=None)
    assert sample_program() != "program"


# --------------------------------------------------------------------------------------------
# Damaged files
# --------------------------------------------------------------------------------------------


def test_every_flipped_byte_is_caught():
    data = sample_program().to_bytes()
    for i in range(len(data)):
        for mask in (0x01, 0x80, 0xFF):
            bad = bytearray(data)
            bad[i] ^= mask
            with pytest.raises(ProgramFormatError) as e:
                Program.from_bytes(bytes(bad))
            if i < 8:
                assert "not a trine program" in str(e.value)
            elif i < 10:
                assert "unsupported format_version" in str(e.value)
            else:
                assert "checksum mismatch" in str(e.value), (i, mask, str(e.value))


def test_every_truncation_is_caught():
    for p in (sample_program(), sample_program(scale=None, labels=None)):
        data = p.to_bytes()
        for cut in range(len(data)):
            with pytest.raises(ProgramFormatError, match=r"^truncated file.* missing\)$"):
                Program.from_bytes(data[:cut])


@pytest.mark.parametrize(
    ("cut", "field", "need", "offset"),
    [
        (0, "magic", 8, 0),
        (5, "magic", 8, 0),
        (9, "format_version", 2, 8),
        (11, "spec_version", 2, 10),
        (13, "file_size", 8, 12),
        (23, "n_layers", 4, 20),
        (24, "layer 0 M", 4, 24),
        (30, "layer 0 K", 4, 28),
        (32, "layer 0 shift", 1, 32),
        (33, "layer 0 relu", 1, 33),
        (40, r"layer 0 bias \(3 x i32\)", 12, 34),
        (47, r"layer 0 weights \(3 x 5 trits\)", 3, 46),
        (60, r"layer 1 bias \(2 x i32\)", 8, 59),
        (68, r"layer 1 weights \(2 x 3 trits\)", 2, 67),
        (69, "has_input_scale", 1, 69),
        (75, "input_scale", 8, 70),
        (78, "has_labels", 1, 78),
        (80, "n_labels", 4, 79),
        (85, "label 0 length", 4, 83),
        (88, r"label 0 \(3 bytes\)", 3, 87),
        (96, r"label 1 \(4 bytes\)", 4, 94),
        (99, "crc32", 4, 98),
    ],
)
def test_truncation_names_the_field(cut, field, need, offset):
    data = sample_program().to_bytes()
    assert len(data) == 102
    missing = offset + need - cut
    need = "1 byte" if need == 1 else f"{need} bytes"
    with pytest.raises(ProgramFormatError) as e:
        Program.from_bytes(data[:cut])
    assert f"{need} at offset {offset}" in str(e.value)
    assert f"({missing} missing)" in str(e.value)
    with pytest.raises(ProgramFormatError, match=f"truncated file.*: {field} needs {need} "):
        Program.from_bytes(data[:cut])


@pytest.mark.parametrize("junk", [b"\x00", b"junk" * 25, None])
def test_trailing_data_is_rejected(junk):
    data = sample_program().to_bytes()
    junk = data if junk is None else junk
    size = "1 byte" if len(junk) == 1 else f"{len(junk)} bytes"
    with pytest.raises(ProgramFormatError, match=f"trailing data: {size} after"):
        Program.from_bytes(data + junk)


def test_load_names_the_path(tmp_path):
    path = tmp_path / "cut.trine"
    path.write_bytes(sample_program().to_bytes()[:50])
    with pytest.raises(ProgramFormatError, match=f"^{path}: truncated file"):
        Program.load(path)
    with pytest.raises(FileNotFoundError):
        Program.load(tmp_path / "missing.trine")
    with pytest.raises(TypeError, match="data must be bytes, not str"):
        Program.from_bytes("TRINE")


L23 = layer(2, 3)
OK_TAIL = trailer()

CRAFTED = [
    (b"PK\x03\x04" + bytes(60), "not a trine program: magic is b'PK"),
    (b"TRINE\x00\n\n" + bytes(60), "not a trine program"),
    (header(1, version=4) + L23 + OK_TAIL,
     "unsupported format_version 4: .*supports versions 1, 2 and 3"),
    (header(1, version=0) + L23 + OK_TAIL, "unsupported format_version 0"),
    (header(1, spec=99) + L23 + OK_TAIL, "spec_version 99 is not supported"),
    (header(0) + OK_TAIL, "n_layers is 0"),
    (header(1) + layer(0, 3) + OK_TAIL, r"layer 0 M \(fan-out\) must be at least 1, not 0"),
    (header(1) + layer(2, 0) + OK_TAIL, r"layer 0 K \(fan-in\) must be in \[1, 65536\], not 0"),
    (header(1) + layer(1, MAX_FAN_IN + 1) + OK_TAIL, f"layer 0 K .*not {MAX_FAN_IN + 1}"),
    (header(2) + L23 + layer(1, 4) + OK_TAIL, "layer 1 K = 4 does not match layer 0 M = 2"),
    (header(1) + layer(2, 3, shift=32) + OK_TAIL, r"layer 0 shift must be in \[0, 31\], not 32"),
    (header(1) + layer(2, 3, relu=2) + OK_TAIL, "layer 0 relu must be 0 or 1, not 2"),
    (
        header(2) + L23 + layer(1, 2, weights=bytes([243])) + OK_TAIL,
        "layer 1 weights: illegal packed byte 243",
    ),
    (header(1) + layer(1, 1, weights=bytes([0])) + OK_TAIL, "layer 0 weights: padding trits"),
    (header(1) + L23 + trailer(has_scale=2), "has_input_scale must be 0 or 1, not 2"),
    (header(1) + L23 + trailer(float("nan")), "input_scale must be a positive finite .*nan"),
    (header(1) + L23 + trailer(-1.0), "input_scale must be a positive finite number, not -1.0"),
    (header(1) + L23 + trailer(0.0), "input_scale must be a positive finite number, not 0.0"),
    (header(1) + L23 + trailer(-0.0), "input_scale must be a positive finite number, not -0.0"),
    (header(1) + L23 + trailer(float("inf")), "input_scale must be a positive finite .*inf"),
    (header(1) + L23 + trailer(has_labels=7), "has_labels must be 0 or 1, not 7"),
    (
        header(1) + L23 + trailer(labels=[b"a", b"b"], n_labels=3),
        "n_labels is 3 but the last layer has 2 outputs",
    ),
    (header(1) + L23 + trailer(labels=[b"a"]), "n_labels is 1 but the last layer has 2 outputs"),
    (header(1) + L23 + trailer(labels=[b"a", b"\xff"]), "label 1 is not valid UTF-8"),
    (header(1) + L23 + trailer(labels=[b"a", b"\xed\xa0\x80"]), "label 1 is not valid UTF-8"),
    # Sizes no file can hold: rejected against the remaining length, before any allocation.
    (
        header(1) + struct.pack("<IIBB", 2**32 - 1, MAX_FAN_IN, 0, 0) + OK_TAIL,
        r"invalid file: layer 0 bias \(4294967295 x i32\) needs 17179869180 bytes at offset 34 "
        r"but only 2 remain before the checksum \(17179869178 missing\)",
    ),
    (
        header(1) + struct.pack("<IIBB", 1, MAX_FAN_IN, 0, 0) + bytes(4) + OK_TAIL,
        r"layer 0 weights \(1 x 65536 trits\) needs 13108 bytes",
    ),
    (header(2**32 - 1) + L23 + OK_TAIL, "invalid file: layer 1 M needs 4 bytes"),
    (
        header(1) + L23 + b"\x00\x01" + struct.pack("<II", 2, 2**32 - 1),
        r"label 0 \(4294967295 bytes\) needs 4294967295 bytes at offset 54",
    ),
    (header(1) + L23 + OK_TAIL + b"\x00", "1 byte of unexpected data at offset 46"),
]


@pytest.mark.parametrize(("body", "message"), CRAFTED, ids=[m[:40] for _, m in CRAFTED])
def test_crafted_file_is_rejected(body, message):
    data = seal(body)
    with pytest.raises(ProgramFormatError, match=message):
        Program.from_bytes(data)


@pytest.mark.parametrize("delta", [-1, 1, 100])
def test_wrong_file_size_with_valid_checksum(delta):
    body = header(1) + L23 + OK_TAIL
    data = seal(body, size=len(body) + 4 + delta)
    with pytest.raises(ProgramFormatError, match=f"file_size says {len(data) + delta} bytes"):
        Program.from_bytes(data)


def test_checksum_mismatch_names_both_values():
    data = bytearray(sample_program().to_bytes())
    data[-1] ^= 0x10
    with pytest.raises(ProgramFormatError, match=r"checksum mismatch: crc32 is 0x[0-9a-f]{8}"):
        Program.from_bytes(bytes(data))


# --------------------------------------------------------------------------------------------
# Atomic save
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("failing", ["replace", "fsync"])
def test_failed_save_leaves_nothing(tmp_path, monkeypatch, failing):
    def fail(*args, **kwargs):
        raise OSError("disk full")

    old = sample_program(scale=0.5)
    target = tmp_path / "net.trine"
    old.save(target)
    monkeypatch.setattr(os, failing, fail)
    with pytest.raises(OSError, match="disk full"):
        sample_program().save(target)
    with pytest.raises(OSError, match="disk full"):
        sample_program().save(tmp_path / "new.trine")
    monkeypatch.undo()
    assert sorted(f.name for f in tmp_path.iterdir()) == ["net.trine"]
    assert Program.load(target) == old


# --------------------------------------------------------------------------------------------
# Device fit and figures
# --------------------------------------------------------------------------------------------


def test_weight_bytes_pads_each_layer_to_whole_tiles():
    p = sample_program()  # layers (M, K) = (3, 5) and (2, 3)
    # one weight word of packed_size(lanes * rows) bytes per tile (trine.contract.device_image)
    assert p.weight_bytes(lanes=1, rows=1) == 15 + 6  # 1-trit tiles take a byte each
    assert p.weight_bytes(lanes=4, rows=2) == (4 + 1) * 2  # 2 x 2 and 1 x 1 tiles of 8 trits
    assert p.weight_bytes(lanes=8, rows=8) == 13 + 13  # one 64-trit tile each
    assert p.weight_bytes(lanes=5, rows=3) == 3 + 3  # one 15-trit tile each
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ProgramError, match="lanes must be a positive integer"):
            p.weight_bytes(lanes=bad, rows=1)
        with pytest.raises(ProgramError, match="rows must be a positive integer"):
            p.weight_bytes(lanes=1, rows=bad)


FITS = {"lanes": 4, "rows": 2, "act_words": 3, "table_words": 20, "bias_depth": 6}


@pytest.mark.parametrize(
    ("tighter", "message"),
    [
        ({"act_words": 2}, r"layer 0 \(Dense\) needs 3 words \(12 bytes\) of activation pool "
                           r"for one sample \(input 2 \+ output 1 words of 4 bytes\), more than "
                           r"act_words = 2"),
        ({"table_words": 19}, r"the layer table needs 20 words \(10 per dense layer, 37 per "
                              r"convolution\), more than table_words = 19"),
        ({"weight_bytes": 9}, r"weights need 10 bytes in 2 x 4 tiles \(layer 0 \(Dense\) the "
                              r"most, 8 bytes\), more than weight_bytes = 9"),
        ({"bias_depth": 5}, r"the biases need 6 entries in blocks of 2 \(layer 0 \(Dense\) the "
                            r"most, 4 entries\), more than bias_depth = 5"),
    ],
)
def test_check_fits(tighter, message):
    p = sample_program()
    image = p.check_fits(DeviceLimits(**FITS, weight_bytes=10))  # exactly at every limit: fits
    assert image.table_words == 20 and image.batch == 1
    limits = DeviceLimits(**{**FITS, "weight_bytes": 10, **tighter})
    with pytest.raises(
        ProgramTooLargeError, match=f"^program does not fit the device: .*{message}"
    ):
        p.check_fits(limits)


def test_check_fits_lists_every_problem():
    limits = DeviceLimits(lanes=1, rows=1, act_words=8, table_words=10, weight_bytes=1,
                          bias_depth=1)
    with pytest.raises(ProgramTooLargeError) as e:
        sample_program().check_fits(limits)
    assert str(e.value).count(";") == 2  # weights, biases, table
    assert isinstance(e.value, ValueError)
    with pytest.raises(TypeError, match="limits must be a trine.contract.params.DeviceLimits"):
        sample_program().check_fits(FITS)


def test_check_fits_takes_convolutions():
    conv = Conv(np.ones((4, 2, 3), np.int8), np.zeros(4, np.int64), 1, 1, 0, True)
    p = Program([conv, MaxPool(2), Flatten(), Layer(np.ones((3, 16), np.int8), [0, 0, 0])],
                input_shape=(2, 8))
    image = p.check_fits(DeviceLimits(lanes=4, rows=2, act_words=16, table_words=47,
                                      weight_bytes=1000, bias_depth=16))
    assert [e.conv for e in image.entries] == [True, False]
    assert p.weight_bytes(4, 2) == image.weight_words * 2


def test_stats():
    w0 = np.array([[1, 0, 0], [0, -1, 1]])
    w1 = np.zeros((1, 2), np.int8)
    p = Program([Layer(w0, [0, 0]), Layer(w1, [3])])
    s = p.stats()
    assert s == {
        "layers": 2,
        "weights": 8,
        "parameters": 11,
        "sparsity": [0.5, 1.0],
        "packed_bytes": 2 + 1,
        "file_bytes": len(p.to_bytes()),
        "bits_per_weight": 8 * len(p.to_bytes()) / 8,
    }
    assert s["file_bytes"] == 24 + (10 + 8 + 2) + (10 + 4 + 1) + 2 + 4
