"""Classify layer: each flow gets its documented path from the catalog and an inventory."""
