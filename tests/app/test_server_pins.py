"""app/server/protocol.py builds on uvicorn's private HttpToolsProtocol: the releases it was written against are pinned
exactly wherever the project installs, and this fails loudly when another release is installed."""

from __future__ import annotations

import importlib.metadata
import re

import pytest

from app import server
from tests.conftest import REPO

tomllib = pytest.importorskip("tomllib")  # Python 3.11+


def test_the_installed_uvicorn_and_httptools_are_the_ones_app_server_was_written_for():
    installed = {name: importlib.metadata.version(name) for name in server.WRITTEN_FOR}
    assert installed == server.WRITTEN_FOR, (
        f"installed {installed}, app/server/protocol.py was written for {server.WRITTEN_FOR}: "
        "GuardedProtocol overrides "
        "uvicorn's private HttpToolsProtocol; read the new release's httptools_impl.py, rerun "
        "tests/app/test_server_limits.py, then move WRITTEN_FOR, pyproject.toml and requirements.lock together"
    )
    assert server.version_mismatches() == []


def test_pyproject_and_constraints_pin_exactly_those_releases():
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert f"uvicorn[standard]=={server.WRITTEN_FOR['uvicorn']}" in deps
    assert f"httptools=={server.WRITTEN_FOR['httptools']}" in deps
    pins = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)$", (REPO / "requirements.lock").read_text(), re.M))
    assert {name: pins.get(name) for name in server.WRITTEN_FOR} == server.WRITTEN_FOR


def test_the_private_parts_of_uvicorn_it_uses_are_there():
    from uvicorn.protocols.http import httptools_impl

    protocol = httptools_impl.HttpToolsProtocol
    for name in (
        "_unset_keepalive_if_required",
        "timeout_keep_alive_handler",
        "data_received",
        "on_header",
        "on_headers_complete",
        "on_message_complete",
        "on_response_complete",
        "connection_made",
        "connection_lost",
    ):
        assert callable(getattr(protocol, name, None)), name
    assert httptools_impl.STATUS_LINE[408].startswith(b"HTTP/1.1 408 ")
