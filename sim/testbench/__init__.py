"""cocotb verification of the generated Verilog: stream agents, tests and a runner."""
