"""corral: a cluster manager for one-off and recurring tasks (see DESIGN.md)."""

__version__ = "0.1.0"
