"""trine.hw.decoder.TritDecoder under Amaranth's simulator, against the contract's unpacker."""

import numpy as np
import pytest

from trine.contract.params import DECODERS
from trine.contract.spec import TRITS_PER_BYTE, TritCode, trits_to_codes, unpack_trits
from trine.hw.decoder import TritDecoder, decoder_table
from trine.sim.testbench import simulate


def expected(byte: int) -> tuple[list[int], bool]:
    """A byte's trit codes and whether it is illegal, from the contract's unpacker."""
    if byte >= 3**TRITS_PER_BYTE:
        return [TritCode.ZERO] * TRITS_PER_BYTE, True
    return [int(c) for c in trits_to_codes(unpack_trits(bytes([byte]), TRITS_PER_BYTE))], False


def decode(kind, n_bytes, words, registered=False):
    """(codes, illegal) of each word, as the decoder gives them its latency after the word."""
    dut = TritDecoder(n_bytes, kind, registered=registered)
    seen = []

    async def bench(ctx):
        for i in range(len(words) + dut.latency - 1):
            if i < len(words):
                ctx.set(dut.word, int.from_bytes(bytes(words[i]), "little"))
            await ctx.tick()
            if i >= dut.latency - 1:
                seen.append(([int(c) for c in ctx.get(dut.codes)], ctx.get(dut.illegal)))

    simulate(dut, bench)
    return seen


@pytest.mark.parametrize("registered", [False, True])
@pytest.mark.parametrize("kind", DECODERS)
@pytest.mark.parametrize("n_bytes", [1, 3, 8])
def test_every_byte_decodes_like_the_contract(kind, n_bytes, registered):
    rng = np.random.default_rng(n_bytes)
    # every byte value in every byte position, then random words (mostly legal)
    words = [[(b + 37 * k) % 256 for k in range(n_bytes)] for b in range(256)]
    words += [list(rng.integers(0, 243 if rng.random() < 0.8 else 256, n_bytes))
              for _ in range(100)]
    got = decode(kind, n_bytes, words, registered)
    for word, (codes, illegal) in zip(words, got, strict=True):
        parts = [expected(int(b)) for b in word]
        assert codes == [c for byte_codes, _ in parts for c in byte_codes], word
        assert illegal == any(bad for _, bad in parts), word
    assert any(illegal for _, illegal in got) and not all(illegal for _, illegal in got)


@pytest.mark.parametrize("kind", DECODERS)
def test_the_output_is_registered(kind):
    """A new word shows only after the clock edge; until then the previous one's result holds."""
    dut = TritDecoder(1, kind)
    trace = []

    async def bench(ctx):
        ctx.set(dut.word, 242)  # the largest legal byte
        await ctx.tick()
        for word in (243, 0):
            ctx.set(dut.word, word)
            trace.append(ctx.get(dut.illegal))
            await ctx.tick()
            trace.append(ctx.get(dut.illegal))

    simulate(dut, bench)
    assert trace == [0, 1, 1, 0]
    assert [decoder_table()[b] >> (2 * TRITS_PER_BYTE) for b in (242, 243)] == [0, 1]


@pytest.mark.parametrize("kind", DECODERS)
def test_a_registered_decoder_answers_a_cycle_later(kind):
    """Codes and the illegal flag of a word show two clock edges after it, not one."""
    dut = TritDecoder(2, kind, registered=True)
    trace = []

    async def bench(ctx):
        ctx.set(dut.word, 0x0079)  # two legal bytes (byte 1, 0: five -1 trits)
        await ctx.tick().repeat(3)
        ctx.set(dut.word, 0xF579)  # byte 1 illegal (245)
        for _ in range(3):
            await ctx.tick()
            ctx.set(dut.word, 0x0079)
            trace.append((ctx.get(dut.illegal), [int(c) for c in ctx.get(dut.codes)][5:]))

    simulate(dut, bench)
    neg = [int(c) for c in trits_to_codes([-1] * TRITS_PER_BYTE)]
    assert trace == [(0, neg), (1, [TritCode.ZERO] * TRITS_PER_BYTE), (0, neg)]
    assert dut.latency == 2 and TritDecoder(2, kind).latency == 1


@pytest.mark.parametrize(
    "kwargs, exc, message",
    [
        (dict(n_bytes=0), ValueError, r"Bytes per word must be >= 1, not 0"),
        (dict(n_bytes=1.5), TypeError, r"Bytes per word must be an integer"),
        (dict(n_bytes=1, kind="lut"), ValueError,
         r"decoder must be one of rom, table, logic, not 'lut'"),
        (dict(n_bytes=1, registered=1), TypeError, r"registered must be a bool, not 1"),
    ],
)
def test_bad_parameters_are_refused(kwargs, exc, message):
    with pytest.raises(exc, match=message):
        TritDecoder(**kwargs)
