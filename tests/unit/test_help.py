"""Every command line's --help renders: argparse formats help lazily, so a stray `%` only fails when asked."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator

import pytest

import bench.cli
import dittoctl.cli


def _commands(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    yield parser
    for action in parser._actions:  # argparse exposes subcommands nowhere else
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _commands(sub)


@pytest.mark.parametrize("root", [dittoctl.cli.parser, bench.cli.parser], ids=["dittoctl", "bench"])
def test_every_commands_help_renders(root: Callable[[], argparse.ArgumentParser]) -> None:
    commands = list(_commands(root()))
    for command in commands:
        text = command.format_help()
        assert text.startswith("usage: " + command.prog), text[:200]
        assert all(option in text for action in command._actions for option in action.option_strings)
    assert len(commands) >= (8 if root is dittoctl.cli.parser else 1)
