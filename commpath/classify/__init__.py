"""Classify layer: each flow gets its documented path from the catalog and an inventory."""

from .catalog import load_catalog, path_ids
from .classifier import ROLES, classify, classify_with_view
from .inventory import Host, Inventory, load_inventory

__all__ = ["classify", "classify_with_view", "load_inventory", "Inventory", "Host", "load_catalog",
           "path_ids", "ROLES"]
