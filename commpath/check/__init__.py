"""Check layer: each path is judged against a policy; findings carry their evidence."""

from .coverage import coverage, note_unseen, run_verdict
from .engine import evaluate
from .finding_set import FindingSet
from .findings import MAX_EXAMPLES, display_filter, fingerprint
from .kinds import TESTS
from .policy import SEVERITIES, Check, Policy, builtin_policies, catalog_checks, load_checks, load_policy
from .tables import FINDING_COLUMNS, PATH_COLUMNS

__all__ = ["FINDING_COLUMNS", "MAX_EXAMPLES", "PATH_COLUMNS", "SEVERITIES", "TESTS", "Check", "FindingSet", "Policy",
           "builtin_policies", "catalog_checks", "coverage", "display_filter", "evaluate", "fingerprint",
           "load_checks", "load_policy", "note_unseen", "run_verdict"]
