"""The command line: one parser per subcommand (as git's and kci-dev's), each with its own
options and help; an unknown subcommand, or one given another's option, is a usage error."""

from __future__ import annotations

import pytest

from cocolab import cli


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exited:
        cli.main(list(argv))
    out = capsys.readouterr()
    return int(exited.value.code or 0), out.out + out.err


def test_the_top_help_lists_commands_not_their_options(capsys: pytest.CaptureFixture[str]
                                                       ) -> None:
    code, text = run(capsys, "--help")
    assert code == 0 and "build" in text and "lab" in text
    for option in ("--patch", "--api", "--check", "--since", "--origin", "--kernel"):
        assert option not in text, option


@pytest.mark.parametrize(("command", "has", "lacks"), [
    ("build", ("--patch", "--kconfig", "--base", "--lane"), ("--api", "--check", "--kernel")),
    ("lab", ("--api", "--callback-token", "--max-download"), ("--patch", "--since")),
    ("kconfig", ("--check", "--apply", "--bare", "--kernel"), ("--patch", "--api", "--lane")),
    ("shell", ("--kernel", "--qemu-arg", "--allow-host-path", "--put"), ("--patch", "--api")),
    ("report", ("--since", "--output"), ("--origin", "--patch")),
    ("kcidb", ("--origin", "--output"), ("--since", "--api")),
])
def test_each_command_helps_with_its_own_options(capsys: pytest.CaptureFixture[str],
                                                 command: str, has: tuple[str, ...],
                                                 lacks: tuple[str, ...]) -> None:
    code, text = run(capsys, command, "--help")
    assert code == 0
    assert all(option in text for option in has), text
    assert not [option for option in lacks if option in text], text


@pytest.mark.parametrize("argv", [
    ("anything", "--help"),  # exited 0 with the flat parser
    ("anything",),
    ("build", "--api", "x"),  # another command's option
    ("build", "debian:7.3", "debian:6.12"),  # one SOURCE
    ("results",),  # merge is the only action, and must be said
    ("results", "split", "r.json", "-o", "x"),
    ("kcidb", "r.json", "-o", "x.json"),  # --origin is required
    ("lab", "--runtime", "r"),  # --api is required
    (),
])
def test_what_is_no_command_line_is_a_usage_error(capsys: pytest.CaptureFixture[str],
                                                  argv: tuple[str, ...]) -> None:
    code, text = run(capsys, *argv)
    assert code == 2 and "usage: cocolab" in text, text
