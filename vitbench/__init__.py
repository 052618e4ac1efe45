"""vitbench: the experiment suite for the comparisons of "An Image is Worth 16x16 Words"."""

__version__ = "0.1.0"
