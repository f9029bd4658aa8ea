"""trine: ternary neural networks from training to an open-toolchain FPGA accelerator.

The package has one layer per idea, each importing only the layers before it:

``trine.contract``
    What every other layer agrees on, in NumPy alone: number formats and trit packing
    (``spec``), the normative integer model (``reference``), the link protocol (``protocol``),
    the device's memory image (``device_image``), the accelerator's parameter set
    (``params``) and the root exception :class:`TrineError` (``errors``).
``trine.hw``
    The gateware, Amaranth components: the MAC array, the accelerator core, the link.
``trine.flow``
    The tool flow: boards and their PLLs, Yosys and nextpnr runs, bitstreams, programming.
``trine.sim``
    The gateware under cocotb on Icarus Verilog and Verilator, and the simulated device.
``trine.host``
    The user's side, with no Amaranth or cocotb: programs, training, import, the client.
``trine.cli``, ``trine.demo``
    The applications on top: the ``trine`` command and ``make demo``.
"""

from trine.contract.errors import TrineError

__version__ = "0.1.0"
__all__ = ["TrineError", "__version__"]
