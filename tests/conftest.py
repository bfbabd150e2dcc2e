"""Suite-wide hooks: the real-cluster tests run last; tests that read the public captures skip, rather
than fail, in a checkout without ../shared beside it."""

from __future__ import annotations

from pathlib import Path

import pytest

PUBLIC = Path(__file__).resolve().parents[1].parent / "shared/pcaps/public"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    # Many tests find their capture inside the test body (``next(PUBLIC.rglob(name))``); without the
    # folder that raises before anything is tested. Only that failure turns into a skip, and only
    # when the folder is really absent: CI has it, so nothing is hidden there.
    outcome = yield
    rep = outcome.get_result()
    if not rep.failed or PUBLIC.exists() or call.excinfo is None:
        return
    missing = call.excinfo.errisinstance((FileNotFoundError, StopIteration)) or "pcaps/public" in str(call.excinfo.value)
    if missing and getattr(item.module, "PUBLIC", None) is not None:
        rep.outcome = "skipped"
        rep.longrepr = (str(item.path), item.location[1] or 0,
                        f"Skipped: needs the public captures at {PUBLIC} (absent beside this checkout)")


def pytest_collection_modifyitems(session, config, items):
    # scripts/test.sh builds Kubernetes beside the suite (long when cold); the tests that need the build
    # wait for it, so they go last (order otherwise kept) and the rest of the suite runs meanwhile
    items[:] = sorted(items, key=lambda item: item.get_closest_marker("real_cluster") is not None)
