"""Classify layer: each flow gets its documented path from the catalog and an inventory."""

from .catalog import load_catalog, path_ids
from .classifier import CLASSIFY_COLUMNS, ROLES, classify, classify_with_view
from .inventory import Host, Inventory, load_inventory

__all__ = ["CLASSIFY_COLUMNS", "ROLES", "Host", "Inventory", "classify", "classify_with_view", "load_catalog",
           "load_inventory", "path_ids"]
