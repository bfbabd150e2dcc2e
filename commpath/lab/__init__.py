"""The lab: an emulated cluster in network namespaces that exercises every documented path."""
