"""The gateware: Amaranth components of the accelerator (imports the contract only)."""
