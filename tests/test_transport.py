"""The serial transport on a real pseudo-terminal: ports are opened exclusively."""

import os
import time

import pytest

from trine.host.transport import DeviceError, PortBusyError, SerialTransport

pytestmark = pytest.mark.skipif(os.name != "posix", reason="pseudo-terminals are POSIX")


@pytest.fixture
def pty_port():
    """A pseudo-terminal: its slave side behaves as a serial port (termios, flock)."""
    master, slave = os.openpty()
    try:
        yield os.ttyname(slave), master
    finally:
        os.close(slave)
        os.close(master)


def test_a_second_opener_of_a_busy_port_gets_a_clear_error(pty_port):
    path, master = pty_port
    first = SerialTransport(path, 115200)
    try:
        with pytest.raises(PortBusyError, match="in use by another program"):
            SerialTransport(path, 115200)
        # the first still works: bytes written by the "device" reach it
        os.write(master, b"\xa5")
        assert first.read(1, time.monotonic() + 2.0) == b"\xa5"
    finally:
        first.close()
    # once closed, the port can be opened again
    SerialTransport(path, 115200).close()


def test_a_missing_port_names_itself(tmp_path):
    missing = str(tmp_path / "ttyUSB9")
    with pytest.raises(DeviceError, match=f"cannot open {missing}"):
        SerialTransport(missing, 115200)
