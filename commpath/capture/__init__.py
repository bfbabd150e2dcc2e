"""Capture layer: agents that record traffic on control-plane and node interfaces."""
