"""Simulation: the gateware under cocotb on Icarus Verilog and Verilator; the simulated device."""
