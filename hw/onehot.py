"""A one-hot state machine for Amaranth modules, for control logic that must be shallow.

Amaranth's ``m.FSM()`` encodes its state in binary: every state test decodes several bits, and
each register's enable is an OR over every state that assigns it, so a large machine's
next-state logic gets deep (a command executor of two dozen states is then far too slow for
an iCE40UP5K at its target clock). Yosys re-encodes such a register as one-hot only with an
attribute, and then ignores its initial value. Here each state is a flip-flop of its own: a
state test is one wire, and a transition clears the current state's bit and sets the next
one's.
"""

from __future__ import annotations

import contextlib

from amaranth.hdl import Module, Signal

__all__ = ["OneHotFSM"]


class OneHotFSM:
    """States of ``m`` as one flip-flop each, the first one set at reset.

    Use :meth:`state` as a context manager for what happens in a state (a state may have
    several such blocks), and :meth:`go` inside it to move on (the machine stays otherwise);
    :meth:`force` moves from any state. Call :meth:`go` at most once on each path
    through a state's statements: unlike ``m.next``, a second call does not cancel the first.

    Parameters
    ----------
    m : Module
    names : sequence of str
        The states; the first is the initial one.

    Raises
    ------
    ValueError
        For no states or a repeated name.
    """

    def __init__(self, m: Module, names):
        names = list(names)
        if not names or len(set(names)) != len(names):
            raise ValueError(f"states must be distinct names, at least one, not {names!r}")
        self._m = m
        self._bits = {n: Signal(name=f"state_{n.lower()}", init=(i == 0))
                      for i, n in enumerate(names)}
        self._current = None

    def ongoing(self, name: str) -> Signal:
        """The flip-flop that is set while the machine is in state ``name``."""
        return self._bits[name]

    @contextlib.contextmanager
    def state(self, name: str):
        """Statements under this context apply while in state ``name``."""
        if self._current is not None:
            raise RuntimeError("states cannot be nested")
        self._current = name
        try:
            with self._m.If(self._bits[name]):
                yield
        finally:
            self._current = None

    def force(self, name: str):
        """Move to state ``name`` at the next clock edge from whatever state, overriding every
        transition assigned before this call (use it last, e.g. for a timeout)."""
        self._m.d.sync += [bit.eq(n == name) for n, bit in self._bits.items()]

    def go(self, name: str):
        """Move from the current state to state ``name`` at the next clock edge."""
        if self._current is None:
            raise RuntimeError("go() must be called inside a state")
        if name != self._current:
            self._m.d.sync += [self._bits[self._current].eq(0), self._bits[name].eq(1)]
