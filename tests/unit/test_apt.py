from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from cocolab.errors import HostError
from cocolab.kernel.apt import (
    AptSource,
    host_sources,
    parse_deb822_sources,
    parse_one_line_sources,
    private_sources_list,
)

DEB822 = """\
Types: deb
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main contrib
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main

Types: deb-src
URIs: http://mirror.example/debian
Suites: bookworm
Components: main

Types: deb
Enabled: no
URIs: http://off.example/
Suites: x
Components: main
"""


def test_deb822() -> None:
    got = parse_deb822_sources(DEB822)
    assert [s.uri for s in got] == ["http://mirror.example/debian",
                                    "http://mirror.example/debian-security"]
    assert got[0].suites == ("bookworm", "bookworm-updates")
    assert got[0].signed_by == "/usr/share/keyrings/debian-archive-keyring.gpg"


def test_one_line() -> None:
    got = parse_one_line_sources(
        "# comment\ndeb [arch=amd64 signed-by=/k.gpg] http://m.example/debian trixie main\n"
        "deb-src http://m.example/debian trixie main\ndeb http://m.example/debian sid main\n")
    assert got == [AptSource("http://m.example/debian", ("trixie",), ("main",), "/k.gpg"),
                   AptSource("http://m.example/debian", ("sid",), ("main",), None)]


def test_private_sources_reuse_the_host_mirror() -> None:
    text = private_sources_list("trixie", parse_deb822_sources(DEB822))
    lines = text.splitlines()
    assert lines[0].endswith("http://mirror.example/debian trixie main")
    assert lines[1].endswith("http://mirror.example/debian-security trixie-security main")
    assert "signed-by=/usr/share/keyrings/debian-archive-keyring.gpg" in lines[0]


@pytest.mark.parametrize("suite", ["sid", "bookworm-backports"])
def test_no_security_suite_for_sid_and_backports(suite: str) -> None:
    text = private_sources_list(suite, parse_deb822_sources(DEB822))
    assert len(text.splitlines()) == 1


def test_no_debian_archive_is_a_host_error() -> None:
    with pytest.raises(HostError, match="no Debian archive"):
        private_sources_list("sid", [])


def test_host_sources_reads_both_formats(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list").write_text("deb http://a.example/debian bookworm main\n")
    (tmp_path / "sources.list.d/debian.sources").write_text(DEB822)
    (tmp_path / "sources.list.d/x.list.disabled").write_text("deb http://z/ x main\n")
    assert [s.uri for s in host_sources(tmp_path)] == [
        "http://a.example/debian", "http://mirror.example/debian",
        "http://mirror.example/debian-security"]


@pytest.mark.skipif(os.geteuid() != 0, reason="apt sandboxes its fetchers only under root")
def test_fetchers_run_as_apt_only_where_apt_can_reach(tmp_path: Path) -> None:
    import pwd

    from cocolab.kernel.apt import sandbox_user
    try:
        uid = pwd.getpwnam("_apt").pw_uid
    except KeyError:
        pytest.skip("this host has no _apt user (apt not installed)")
    hidden = tmp_path / "apt"  # pytest's base temp dir is 0700: _apt cannot search it
    hidden.mkdir()
    assert sandbox_user(hidden) is None
    with tempfile.TemporaryDirectory(dir="/var/tmp") as open_dir:
        os.chmod(open_dir, 0o755)
        assert sandbox_user(Path(open_dir)) == ("_apt", uid)
        assert sandbox_user(Path(open_dir), user="no-such-user-here") is None
