"""The stop-and-wait link against latency (issue 13 §4): weight-stream rate and batch-1
inference rate at 0, 1 and 16 ms each way, on a 3 Mbaud line.

The line is :class:`trine.sim.faults.FaultyProxy` with ``Faults(latency=L, rate=300_000)``
(a 3 Mbaud 8N1 UART carries 300,000 bytes/s each way; an FTDI bridge's latency timer holds
short answers for up to 16 ms by default). The device is :class:`InstantDevice`: it answers
every request at once (INFO, WRITE into memories, RUN without computing, READ), so only the
link is measured, as on a board whose device answers in microseconds. The real
:class:`trine.host.client.Client` loads a 64-256-256-10 program (the weight stream) and runs
batch-1 inferences.

``python -m bench link_latency`` (about a minute); figures go to bench/results/link_latency.json.
"""

from __future__ import annotations

import argparse
import os
import socket
import struct
import threading
import time

import numpy as np

from bench._common import save
from trine.contract.params import UP5K
from trine.contract.protocol import (
    ACK,
    NAK,
    RUN_ACK,
    WRITE_HEADER,
    ErrorCode,
    FrameDecoder,
    Op,
    encode_frame,
)
from trine.contract.reference import Layer
from trine.host.client import Client
from trine.host.program import Program
from trine.sim.faults import Faults, FaultyProxy

#: Bytes per second a 3 Mbaud 8N1 UART carries each way.
UART_RATE = 300_000
LATENCIES_MS = (0, 1, 16)


class InstantDevice:
    """A device on 127.0.0.1 that answers every request at once, with the tag a real one
    gives; RUN computes nothing. The iCEBreaker's device (UP5K) as INFO describes it."""

    def __init__(self):
        self.info = UP5K.device_info(48_000_000, 3_000_000)
        self.memory = bytearray(1 << 20)
        self.owner = self.program = 0
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _answer(self, f) -> bytes:
        if f.op == Op.INFO:
            op, payload = Op.INFO | ACK, self.info.to_bytes()
        elif f.op == Op.WRITE:
            op, payload = Op.WRITE | ACK, b""
        elif f.op == Op.RUN:
            op, payload = Op.RUN | ACK, RUN_ACK.pack(1000)
        elif f.op == Op.READ:
            _, word, count = struct.unpack("<BIH", f.payload)
            op, payload = Op.READ | ACK, bytes(self.memory[word * 8 : word * 8 + count])
        else:
            op, payload = NAK, bytes([f.op, ErrorCode.UNKNOWN_OPCODE])
        reply = encode_frame(op, f.seq, payload, session=f.session, check=f.crc,
                             program=self.program, owner=self.owner)
        if f.op in (Op.WRITE, Op.RUN):
            self.owner, self.program = f.session, f.program
            if f.op == Op.WRITE and len(f.payload) > WRITE_HEADER:
                word = struct.unpack_from("<I", f.payload, 1)[0]
                data = f.payload[WRITE_HEADER:]
                self.memory[word * 8 : word * 8 + len(data)] = data
        return reply

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            decoder = FrameDecoder()
            with conn:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                while data := conn.recv(65536):
                    for f in decoder.feed(data):
                        conn.sendall(self._answer(f))


def the_program() -> Program:
    rng = np.random.default_rng(0)
    widths = [64, 256, 256, 10]
    return Program([Layer(rng.integers(-1, 2, (m, k)), rng.integers(-99, 99, m), 5,
                          relu=i < 2) for i, (k, m) in enumerate(zip(widths[:-1], widths[1:],
                                                                     strict=True))])


def measure(latency_ms: float, inferences: int) -> dict:
    device = InstantDevice()
    program = the_program()
    x = np.random.default_rng(1).integers(-128, 128, (inferences, 64)).astype(np.int8)
    faults = Faults(latency=latency_ms / 1000, rate=UART_RATE)
    with FaultyProxy(device.port, faults) as proxy, Client(proxy.url, timeout=5) as client:
        client.info()
        load = client.load(program)
        t0 = time.perf_counter()
        for row in x:
            client.infer(row)
        seconds = time.perf_counter() - t0
    return {
        "latency_ms": latency_ms,
        "load_payload_bytes": load.payload_bytes,
        "load_seconds": round(load.seconds, 4),
        "load_frames": load.frames,
        "weight_stream_bytes_per_s": round(load.wire_bytes_sent / load.seconds),
        "weight_stream_share_of_uart": round(load.wire_bytes_sent / load.seconds / UART_RATE,
                                             3),
        "inferences_per_s": round(inferences / seconds, 2),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--inferences", type=int, default=20)
    args = parser.parse_args(argv)
    rows = [measure(ms, args.inferences) for ms in LATENCIES_MS]
    base = rows[0]["inferences_per_s"]
    for r in rows:
        r["inference_rate_vs_0ms"] = round(r["inferences_per_s"] / base, 3)
        rate, share = r["weight_stream_bytes_per_s"], r["weight_stream_share_of_uart"]
        print(f"{r['latency_ms']:>3} ms each way: weight stream {rate:>7,} B/s ({share:.0%} of "
              f"the UART), batch-1 "
              f"{r['inferences_per_s']:7.1f} inferences/s ({r['inference_rate_vs_0ms']:.0%} of "
              f"0 ms)")
    figures = {"uart_bytes_per_s": UART_RATE, "window": 1, "load_average": os.getloadavg()[0],
               "rows": rows}
    print(f"saved {save('link_latency', figures)}")
    return figures


if __name__ == "__main__":
    main()
