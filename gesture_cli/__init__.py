"""gx: a command-line toolchain for gesture and sign-language research with vision foundation models."""

__version__ = "0.1.0"
