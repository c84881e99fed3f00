"""Elaborate a compiled network into the Amaranth accelerator and convert it to Verilog."""

from amaranth.back import verilog

from hw.network import Accelerator

__all__ = ["elaborate", "convert"]


def elaborate(net):
    return Accelerator(net)


def convert(net, *, name=None):
    """Return the Verilog text of the accelerator, with top module ``name`` (default: the model's)."""
    top = elaborate(net)
    module = name or ("abcnet_" + net.name.replace("-", "_"))
    return verilog.convert(top, name=module, emit_src=False)
