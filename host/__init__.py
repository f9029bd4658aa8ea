"""The host: programs, training, import and the client; never imports Amaranth or cocotb."""
