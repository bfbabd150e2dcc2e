"""Check layer: each path is judged against a policy; findings carry their evidence."""

from .engine import display_filter, evaluate
from .policy import SEVERITIES, Check, Policy, builtin_policies, catalog_checks, load_checks, load_policy

__all__ = ["evaluate", "load_policy", "load_checks", "builtin_policies", "display_filter", "Policy",
           "Check", "SEVERITIES", "catalog_checks"]
