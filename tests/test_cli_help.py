"""The command line explains itself: --version, a description, help text on every option."""

from __future__ import annotations

import argparse

import pytest

from commpath import __version__, cli


def _parsers(parser: argparse.ArgumentParser, name: str = "commpath"):
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from _parsers(sub, f"{name} {sub_name}")


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"commpath {__version__}"


def test_top_level_help_is_a_description_with_exit_codes(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    assert "Prove from packet captures how a Kubernetes control plane" in out
    assert "parses arguments" not in out          # not the module's internal docstring
    for code in ("0 done", "1 findings", "2 bad usage", "3 (analyze, report)"):
        assert code in out


def test_every_option_of_every_command_has_help():
    missing = [f"{name} {'/'.join(a.option_strings) or a.dest}"
               for name, parser in _parsers(cli.build_parser()) for a in parser._actions
               if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction)) and not a.help]
    assert missing == []


def test_defaults_are_shown_once(capsys):
    with pytest.raises(SystemExit):
        cli.main(["report", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "(default: high)" in out and "(default: default)" in out
    assert "(default: None)" not in out and "(default: False)" not in out
