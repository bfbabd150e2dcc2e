"""Decode layer: captures become flow records, handshakes and certificates."""
