"""The tool flow: boards, PLLs, Yosys and nextpnr runs, bitstreams and programming."""
