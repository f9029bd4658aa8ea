"""The .trine format, version 2: convolutional programs on file, and loading that cannot be
made to read without bound. (Version 1 is tested byte for byte in tests/test_program.py.)"""

import os
import struct
import subprocess
import sys
import time
import zlib

import numpy as np
import pytest

from trine.contract.reference import Conv, Flatten, Layer, MaxPool
from trine.host.program import MAX_FILE_SIZE, Program, ProgramError, ProgramFormatError
from trine.host.trine_file import MAGIC


def cnn_program(ndim=1, scale=0.5, labels=("a", "b", "c")):
    rng = np.random.default_rng(ndim)
    if ndim == 1:
        conv = Conv(rng.integers(-1, 2, (4, 2, 3)), rng.integers(-99, 99, 4), 2, 1, 3, True)
        shape, flat = (2, 11), 4 * 3
    else:
        conv = Conv(rng.integers(-1, 2, (4, 1, 3, 2)), rng.integers(-99, 99, 4), (1, 2),
                    (1, 0), 2, True)
        shape, flat = (1, 6, 7), 4 * 3 * 1
    pool = MaxPool(2, ndim=ndim) if ndim == 1 else MaxPool((2, 3))
    dense = Layer(rng.integers(-1, 2, (3, flat)), rng.integers(-9, 9, 3), 1, False)
    return Program([conv, pool, Flatten(), dense], scale, labels, input_shape=shape)


@pytest.mark.parametrize("ndim", [1, 2])
def test_round_trip_keeps_every_field(ndim, tmp_path):
    p = cnn_program(ndim)
    data = p.to_bytes()
    assert struct.unpack_from("<H", data, 8)[0] == 2  # a convolution needs version 2
    q = Program.from_bytes(data)
    assert q == p and q.input_shape == p.input_shape and q.shapes == p.shapes
    conv = q.layers[0]
    assert (conv.stride, conv.padding) == (p.layers[0].stride, p.layers[0].padding)
    assert q.layers[1].kernel == p.layers[1].kernel
    x = np.random.default_rng(0).normal(0, 30, (5, *p.input_shape))
    assert np.array_equal(q.run_reference(x), p.run_reference(x))
    path = tmp_path / "cnn.trine"
    p.save(path)
    assert Program.load(path) == p


def test_dense_programs_keep_version_1_and_shaped_inputs_take_version_2():
    dense = Program([Layer(np.ones((2, 6), np.int8), [0, 1])])
    assert struct.unpack_from("<H", dense.to_bytes(), 8)[0] == 1  # older readers read it
    shaped = Program([Flatten(), Layer(np.ones((2, 6), np.int8), [0, 1])], input_shape=(2, 3))
    data = shaped.to_bytes()
    assert struct.unpack_from("<H", data, 8)[0] == 2
    assert Program.from_bytes(data).input_shape == (2, 3)


def test_flat_inputs_are_accepted_for_a_shaped_program():
    p = cnn_program(2)
    x = np.random.default_rng(1).integers(-128, 128, (4, 1, 6, 7))
    assert np.array_equal(p.run_reference(x.reshape(4, -1)), p.run_reference(x))
    assert np.array_equal(p.run_reference(x[0].reshape(-1)), p.run_reference(x)[0])
    with pytest.raises(ProgramError, match=r"input must have shape \(1, 6, 7\), .* not \(4, 41\)"):
        p.run_reference(np.zeros((4, 41)))


def test_every_flipped_byte_and_every_truncation_is_caught():
    data = cnn_program(1).to_bytes()
    for i in range(len(data)):
        for bit in (0, 5):
            bad = bytearray(data)
            bad[i] ^= 1 << bit
            with pytest.raises(ProgramFormatError):
                Program.from_bytes(bytes(bad))
    for cut in range(len(data)):
        with pytest.raises(ProgramFormatError, match=r"^truncated file.* missing\)$"):
            Program.from_bytes(data[:cut])


def v2_file(layers_bytes, n_layers, shape=(2, 9), tail=b"\x00\x00"):
    body = bytearray(MAGIC + struct.pack("<HHQI", 2, 1, 0, n_layers))
    body += struct.pack("<B", len(shape)) + b"".join(struct.pack("<I", d) for d in shape)
    body += layers_bytes + tail
    struct.pack_into("<Q", body, 12, len(body) + 4)
    return bytes(body) + struct.pack("<I", zlib.crc32(body))


def conv_record(c_out=2, c_in=2, kernel=(3,), stride=(1,), padding=(0,), ndim=None,
                shift=0, relu=0):
    ndim = len(kernel) if ndim is None else ndim
    n = c_out * c_in * int(np.prod(kernel))
    return (struct.pack("<BBII", 1, ndim, c_out, c_in)
            + b"".join(struct.pack("<I", v) for v in (*kernel, *stride, *padding))
            + struct.pack("<BB", shift, relu) + bytes(4 * c_out) + bytes([121]) * -(-n // 5))


@pytest.mark.parametrize("body, n, message", [
    (b"\x07", 1, r"layer 0 kind must be 0 \(dense\), 1 \(conv\), 2 \(max-pool\) or 3"),
    (conv_record(ndim=3), 1, "layer 0 conv ndim must be 1 or 2, not 3"),
    (conv_record(c_in=2, kernel=(40000,)), 1, "fan-in C_in x kernel = 80000 exceeds 65536"),
    (conv_record(stride=(0,)), 1, r"layer 0 stride must be in \[1, 65536\], not 0"),
    (conv_record(c_in=3), 1, r"the layers do not chain: layer 0 \(Conv1d\): Conv1d expects "
                             r"3 input channels, not 2"),
    (conv_record(kernel=(12,)), 1, "kernel 12 is larger than its padded input length 9"),
    (conv_record() + b"\x02\x01" + struct.pack("<I", 2), 2,
     "layer 1 \\(MaxPool1d\\): MaxPool1d window 2 does not divide the input size 7"),
    (conv_record() + struct.pack("<BIIBB", 0, 2, 14, 0, 0) + bytes(8) + bytes([121]) * 6, 2,
     r"layer 1 \(Dense\) needs a flat input, not \(2, 7\): put a Flatten before it"),
    (conv_record(shift=40), 1, r"layer 0 shift must be in \[0, 31\], not 40"),
])
def test_crafted_version_2_files_are_refused(body, n, message):
    with pytest.raises(ProgramFormatError, match=message):
        Program.from_bytes(v2_file(body, n))


def test_bad_input_shapes_are_refused():
    with pytest.raises(ProgramFormatError, match="input_rank must be 1, 2 or 3, not 4"):
        Program.from_bytes(v2_file(b"", 1, shape=(1, 1, 1, 1)))
    with pytest.raises(ProgramFormatError, match=r"input dim must be in \[1, 65536\], not 0"):
        Program.from_bytes(v2_file(b"", 1, shape=(0, 9)))


def test_load_refuses_what_is_not_a_regular_file(tmp_path):
    with pytest.raises(ProgramFormatError, match="not a regular file"):
        Program.load("/dev/zero")
    with pytest.raises(ProgramFormatError, match="not a regular file"):
        Program.load(tmp_path)
    # a FIFO with no writer: a plain open() would wait for one for ever
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    code = ("import sys; from trine.host.program import Program, ProgramFormatError\n"
            "try: Program.load(sys.argv[1])\n"
            "except ProgramFormatError as e: print(e)")
    out = subprocess.run([sys.executable, "-c", code, str(fifo)], capture_output=True,
                         text=True, timeout=60)
    assert "not a regular file" in out.stdout, out.stderr


def test_load_of_a_huge_sparse_file_stops_at_once(tmp_path):
    path = tmp_path / "huge.trine"
    with open(path, "wb") as f:
        f.write(cnn_program(1).to_bytes()[:24])
        f.truncate(4 << 30)  # 4 GiB, sparse: no disk used
    t0 = time.monotonic()
    with pytest.raises(ProgramFormatError,
                       match=f"more than a program may have \\({MAX_FILE_SIZE}"):
        Program.load(path)
    assert time.monotonic() - t0 < 5


def test_a_declared_size_beyond_the_limit_is_refused_before_reading(tmp_path):
    data = bytearray(cnn_program(1).to_bytes())
    struct.pack_into("<Q", data, 12, 1 << 40)
    path = tmp_path / "lies.trine"
    path.write_bytes(bytes(data))
    with pytest.raises(ProgramFormatError, match="more than a program may have"):
        Program.load(path)


def test_loading_holds_the_trits_once(tmp_path):
    """Peak memory of a load stays near what the program holds (its trits as int8, five per
    file byte) plus the file: measured with tracemalloc, not timed."""
    import tracemalloc

    rng = np.random.default_rng(7)
    layers = [Layer(rng.integers(-1, 2, (1021, 1021)).astype(np.int8),
                    np.zeros(1021, np.int64)) for _ in range(3)]
    path = tmp_path / "big.trine"
    Program(layers).save(path)
    size = path.stat().st_size
    tracemalloc.start()
    try:
        p = Program.load(path)
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert p == Program(layers)
    trits = sum(layer.weights.size for layer in layers)
    assert current < trits + 2 * size  # the trits once, no float copy until it runs
    assert peak < trits + 3 * size  # the file, the trits and one chunk's work (was 9 x)
