"""A progress bar for long reads: tqdm (notebook-aware) when installed, quietly nothing otherwise."""

from __future__ import annotations

import sys
import warnings


class _Silent:
    """Stands in for a tqdm bar: accepts the same calls and does nothing."""

    def __init__(self, iterable=None, **_):
        self.iterable = iterable
        self.n = 0

    def __iter__(self):
        return iter(self.iterable if self.iterable is not None else ())

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def update(self, n=1):
        self.n += n

    def set_postfix_str(self, *_, **__):
        pass

    def set_description(self, *_, **__):
        pass

    def close(self):
        pass


def _in_notebook() -> bool:
    shell = sys.modules.get("IPython")
    try:
        ip = shell.get_ipython() if shell else None
    except Exception:
        return False
    return ip is not None and type(ip).__name__ == "ZMQInteractiveShell"


def progress(iterable=None, *, total=None, desc: str | None = None, unit: str = "it", enabled: bool = True,
             unit_scale: bool = False, leave: bool = False):
    """A bar over ``iterable`` (or a manual one with ``total``): a widget in Jupyter, text on a terminal.

    Degrades to a silent stand-in when disabled, when tqdm is missing, or when stderr is no terminal
    outside a notebook.
    """
    notebook = _in_notebook()
    if not enabled or not (notebook or sys.stderr.isatty()):
        return _Silent(iterable)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if notebook:
                from tqdm.auto import tqdm
            else:
                from tqdm import tqdm
            return tqdm(iterable, total=total, desc=desc, unit=unit, unit_scale=unit_scale, leave=leave)
    except Exception:  # tqdm missing, or its notebook widget unavailable
        return _Silent(iterable)


class StageBar:
    """One bar over every task of a run, stage after stage: each stage adds its tasks to the total
    (a run's later stages are known only once the earlier ones are done) and names the bar while its
    tasks run. ``done`` and ``total`` count the tasks, shown or not."""

    def __init__(self, enabled: bool = True, unit: str = "task"):
        self.bar = progress(total=0, desc="tasks", unit=unit, enabled=enabled, leave=False)
        self.done = self.total = 0
        self.stages: list[tuple[str, int]] = []

    def stage(self, name: str, tasks: int) -> None:
        self.total += tasks
        self.stages.append((name, tasks))
        bar = self.bar
        if not isinstance(bar, _Silent):
            bar.total = self.total
            widget = getattr(bar, "container", None)      # Jupyter: the widget keeps its own maximum
            if widget is not None:
                try:
                    widget.children[1].max = self.total
                except (AttributeError, IndexError):
                    pass
            bar.set_description(name)                       # and drawn again

    def update(self, n: int = 1) -> None:
        self.done += n
        self.bar.update(n)

    def close(self) -> None:
        self.bar.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


class ReadProgress:
    """A per-file byte bar for the decode engine's ``progress(file, done, total)`` callback."""

    def __init__(self):
        self.bar = None
        self.file = None

    def __call__(self, file: str, done: int, total: int) -> None:
        if file != self.file:
            self.close()
            from pathlib import Path
            self.file = file
            self.bar = progress(total=total, desc=Path(file).name, unit="B", unit_scale=True, leave=False)
        if self.bar is not None:
            self.bar.update(max(0, done - self.bar.n))
            if total and done >= total:
                self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def read_callback(enabled: bool = True):
    """A ReadProgress when a bar can be shown (Jupyter, or a terminal with tqdm), else None."""
    if not enabled or not (_in_notebook() or sys.stderr.isatty()):
        return None
    try:
        import tqdm  # noqa: F401
    except ImportError:
        return None
    return ReadProgress()
