"""trine.host.arch: architecture strings, their layers and their errors."""

import pytest

from trine.host.arch import ArchError, LayerSpec, arch_text, parse_arch


def test_the_mnist1d_cnn():
    specs = parse_arch("c64k5s2p1,c64k3s2p1,c64k3s2p1", (1, 40), 10)
    assert [s.kind for s in specs] == ["conv", "conv", "conv", "flatten", "dense"]
    assert specs[0] == LayerSpec("conv", 64, (5,), (2,), (1,), True)
    assert specs[-1] == LayerSpec("dense", 10, relu=False)
    assert arch_text(specs) == "c64k5s2p1,c64k3s2p1,c64k3s2p1"


def test_2d_pooling_and_rectangles():
    specs = parse_arch("C8K3P1, M2, c4k3x2s1x2p0x1 ,m2x1,d16", (1, 8, 8), 10)
    assert specs[0].kernel == (3, 3) and specs[0].padding == (1, 1)
    assert specs[1] == LayerSpec("pool", kernel=(2, 2))
    assert specs[2].kernel == (3, 2) and specs[2].stride == (1, 2)
    assert specs[3].kernel == (2, 1)
    assert [s.kind for s in specs[4:]] == ["flatten", "dense", "dense"]
    assert arch_text(specs) == "c8k3p1,m2,c4k3x2s1x2p0x1,m2x1,d16"


def test_an_mlp_needs_no_flatten():
    specs = parse_arch("d32,d16", (64,), 10)
    assert [(s.kind, s.width, s.relu) for s in specs] == [("dense", 32, True),
                                                          ("dense", 16, True),
                                                          ("dense", 10, False)]


@pytest.mark.parametrize("text, shape, message", [
    ("c4k3,x1", (1, 10), r"'x1' is not a layer: write c<C>k<k>"),
    ("c4k3", (10,), r"'c4k3': a convolution needs a \(C, L\) or \(C, H, W\) input"),
    ("m2", (10,), r"'m2': max-pooling needs"),
    ("c4k20", (1, 10), r"'c4k20': Conv1d kernel 20 is larger than its padded input length 10"),
    ("c4k3,m3", (1, 10), r"'m3': MaxPool1d window 3 does not divide the input size 8"),
    ("c4k3x2x1", (1, 8, 8), r"'c4k3x2x1' is not a layer"),
    ("c4k3x2", (1, 10), r"'c4k3x2': 3x2 gives 2 sizes for a 1-D input"),
    ("c0k3", (1, 10), r"'c0k3': a layer needs at least one output"),
])
def test_errors_name_the_token(text, shape, message):
    with pytest.raises(ArchError, match=message):
        parse_arch(text, shape, 10)
