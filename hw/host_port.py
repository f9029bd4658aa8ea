"""The accelerator core's host port: what the command executor sees of the core.

:class:`HostPortSignature` is described from the host's side (the command executor has it as
``Out``, :class:`trine.hw.core.AcceleratorCore` as ``In``, as with ``lib.stream``). It has three
parts, each a signature of its own so that the core can hand it to the block that serves it:

* ``write`` (:class:`HostWriteSignature`): one byte into any of the four memories;
* ``read`` (:class:`HostReadSignature`): one byte out of any of the four memories;
* ``run`` (:class:`RunSignature`): start a run and see how it went.

The widths follow from one :class:`trine.contract.params.AcceleratorParams`.
"""

from __future__ import annotations

from amaranth.lib.wiring import In, Out

from trine.contract.device_image import BIAS_STORE_BYTES, TABLE_WORD_BYTES
from trine.contract.params import AcceleratorParams
from trine.contract.protocol import Target
from trine.hw.params import ParamsSignature, check_params

__all__ = [
    "CYCLE_COUNTER_WIDTH",
    "TARGET_WIDTH",
    "HostWriteSignature",
    "HostReadSignature",
    "RunSignature",
    "HostPortSignature",
]

#: Bits of the run cycle counter (saturating).
CYCLE_COUNTER_WIDTH = 32
#: Bits of a :class:`trine.contract.protocol.Target`.
TARGET_WIDTH = max(Target).bit_length()


def _largest_depth(params: AcceleratorParams) -> int:
    return max(params.weight_words, params.bias_depth, params.table_words, params.act_words)


def _widest_word(params: AcceleratorParams) -> int:
    return max(params.beat_bytes, BIAS_STORE_BYTES, TABLE_WORD_BYTES, params.lanes)


class HostWriteSignature(ParamsSignature):
    """A host write of one byte: byte ``lane`` of word ``addr`` of memory ``target``.

    The core takes it in any cycle with ``en`` high while it is idle, except the cycle of a
    start, and ignores it while it runs; a write outside the target memory (``addr`` past its
    depth, ``lane`` past its word) is ignored too. It takes effect a cycle later.

    Members
    -------
    target : Out(TARGET_WIDTH)
        :class:`trine.contract.protocol.Target`.
    addr : Out(range(largest memory depth))
    lane : Out(range(widest memory word in bytes))
    data : Out(8)
    en : Out(1)
    """

    def __init__(self, params: AcceleratorParams):
        params = check_params(params)
        super().__init__(params, {
            "target": Out(TARGET_WIDTH),
            "addr": Out(range(_largest_depth(params))),
            "lane": Out(range(_widest_word(params))),
            "data": Out(8),
            "en": Out(1),
        })


class HostReadSignature(ParamsSignature):
    """A host read of one byte of a memory, meaningful while the core is idle.

    Members
    -------
    target : Out(TARGET_WIDTH)
        The memory, one of :data:`trine.contract.protocol.READABLE` (a core built with
        ``readback="pool"`` reads the activation pool whatever this says).
    addr : Out(range(largest memory depth))
    lane : Out(range(widest memory word in bytes))
    data : In(8)
        Byte ``lane`` of word ``addr`` of ``target``, as they were a cycle earlier (the bits
        a memory does not store read as 0: the top six of a bias entry's five bytes).
    """

    def __init__(self, params: AcceleratorParams):
        params = check_params(params)
        super().__init__(params, {
            "target": Out(TARGET_WIDTH),
            "addr": Out(range(_largest_depth(params))),
            "lane": Out(range(_widest_word(params))),
            "data": In(8),
        })


class RunSignature(ParamsSignature):
    """Run control: start a run, see whether it is going and how it ended.

    Members
    -------
    start : Out(1)
        Strobe, taken while idle: run the first ``n_layers`` entries of the layer table on
        ``batch`` samples (where they are in the pool is the table's business).
    n_layers : Out(8)
    batch : Out(range(params.max_batch + 1))
    busy : In(1)
        High from the cycle after ``start`` until the run ends.
    error : In(8)
        :class:`trine.contract.protocol.ErrorCode` of the last run, 0 if it succeeded.
    cycles : In(CYCLE_COUNTER_WIDTH)
        Clock cycles the last run was busy (saturating).
    """

    def __init__(self, params: AcceleratorParams):
        params = check_params(params)
        super().__init__(params, {
            "start": Out(1),
            "n_layers": Out(8),
            "batch": Out(range(params.max_batch + 1)),
            "busy": In(1),
            "error": In(8),
            "cycles": In(CYCLE_COUNTER_WIDTH),
        })


class HostPortSignature(ParamsSignature):
    """Everything the host does with the core: writes, pool reads, runs.

    Parameters
    ----------
    params : trine.contract.params.AcceleratorParams

    Members
    -------
    write : Out(HostWriteSignature(params))
    read : Out(HostReadSignature(params))
    run : Out(RunSignature(params))

    Raises
    ------
    ParameterTypeError
        Unless ``params`` is an :class:`AcceleratorParams`.
    """

    def __init__(self, params: AcceleratorParams):
        params = check_params(params)
        super().__init__(params, {
            "write": Out(HostWriteSignature(params)),
            "read": Out(HostReadSignature(params)),
            "run": Out(RunSignature(params)),
        })
