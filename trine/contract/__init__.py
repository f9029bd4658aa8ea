"""The contract: formats, the reference, the protocol, the device image and the parameter set.

NumPy only; imports nothing else of trine (tests/test_layers.py checks it).
"""
