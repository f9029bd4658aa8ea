"""trine.hw.host_port: the core's host port signature, its widths and who holds which side."""

import pytest
from amaranth.hdl import Shape
from amaranth.lib import wiring

from trine.contract.errors import ParameterTypeError
from trine.contract.params import SMALL, UP5K
from trine.hw.core import AcceleratorCore
from trine.hw.executor import CommandExecutor
from trine.hw.host_port import CYCLE_COUNTER_WIDTH, HostPortSignature


def widths(signature):
    return {".".join(map(str, path)): (member.flow.name, Shape.cast(member.shape).width)
            for path, member in signature.members.flatten() if member.is_port}


def test_members_and_widths_follow_the_parameters():
    got = widths(HostPortSignature(UP5K))
    # the largest memory is the weight memory (16384 words), the widest word a weight beat
    assert got["write.addr"] == ("Out", 14) and got["write.lane"] == ("Out", 3)
    # reads reach every memory too (READ's memory byte)
    assert got["read.target"] == got["write.target"] == ("Out", 2)
    assert got["read.addr"] == ("Out", 14)
    assert got["read.lane"] == ("Out", 3) and got["read.data"] == ("In", 8)
    assert got["run.n_layers"] == ("Out", 8) and got["run.batch"] == ("Out", 3)
    assert got["run.cycles"] == ("In", CYCLE_COUNTER_WIDTH)
    assert {k for k, (flow, _) in got.items() if flow == "In"} == {
        "read.data", "run.busy", "run.error", "run.cycles"}


def test_equal_for_equal_parameters():
    assert HostPortSignature(UP5K) == HostPortSignature(UP5K)
    assert HostPortSignature(UP5K) != HostPortSignature(SMALL)
    assert hash(HostPortSignature(SMALL)) == hash(HostPortSignature(SMALL))
    assert repr(HostPortSignature(SMALL)).startswith("HostPortSignature(AcceleratorParams(")


def test_the_executor_drives_it_and_the_core_serves_it():
    info = SMALL.device_info()
    assert CommandExecutor(SMALL, info).signature.members["core"].signature == \
        HostPortSignature(SMALL)
    assert AcceleratorCore(SMALL).signature.members["host"].signature == \
        HostPortSignature(SMALL).flip()
    from amaranth.hdl import Module

    m = Module()
    wiring.connect(m, CommandExecutor(SMALL, info).core, AcceleratorCore(SMALL).host)


def test_parameters_must_be_accelerator_params():
    with pytest.raises(ParameterTypeError,
                       match=r"params must be a trine.contract.params.AcceleratorParams, not 8"):
        HostPortSignature(8)
    with pytest.raises(ParameterTypeError, match="params must be"):
        AcceleratorCore(dict(lanes=2))
    with pytest.raises(TypeError, match="info must be a trine.contract.protocol.DeviceInfo"):
        CommandExecutor(SMALL, b"\0" * 40)
