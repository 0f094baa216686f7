"""The QMP monitor: QEMU's refusal, silence or hang-up is a VMError (a RIG FAILURE in a test
body), never an exception the plugin would count as the kernel's failure."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator

import pytest
from fake_qemu import qmp_requests

from cocolab.errors import MonitorError, QMPCommandFailed, VMError
from cocolab.monitor import Monitor

GREETING = {"QMP": {"version": {"qemu": {"major": 10, "minor": 0, "micro": 0},
                                "package": ""}, "capabilities": []}}


def _qmp(sock: socket.socket, answers: dict[str, object]) -> None:
    """A QMP server on `sock`: `answers[name]` is the reply's body ("return" or "error"),
    None leaves the command unanswered, "hang up" closes the socket."""
    sock.sendall(json.dumps(GREETING).encode() + b"\r\n")
    for request in qmp_requests(sock):
        name = request["execute"]
        body = answers.get(name, {"return": {"status": "running", "running": True}}
                           if name == "query-status" else {"return": {}})
        if body == "hang up":
            sock.close()
            return
        if body is not None:
            reply = {**body, "id": request["id"]} if "id" in request else body
            sock.sendall(json.dumps(reply).encode() + b"\r\n")


@pytest.fixture
def monitor(request: pytest.FixtureRequest) -> Iterator[Monitor]:
    ours, qemus = socket.socketpair()
    threading.Thread(target=_qmp, args=(qemus, request.param), daemon=True).start()
    mon = Monitor(ours, "test")
    mon.start(timeout=5.0)
    yield mon
    mon.close()
    qemus.close()


REFUSAL = {"error": {"class": "GenericError", "desc": "Device 'nope' not found"}}


@pytest.mark.parametrize("monitor", [{"device_del": REFUSAL}], indirect=True)
def test_a_command_qemu_refuses_is_a_vm_error_with_qemu_s_words(monitor: Monitor) -> None:
    with pytest.raises(QMPCommandFailed) as caught:
        monitor.cmd("device_del", {"id": "nope"})
    assert isinstance(caught.value, VMError)
    assert str(caught.value) == ("QEMU refused QMP 'device_del': GenericError: "
                                 "Device 'nope' not found")
    assert caught.value.error_class == "GenericError"


@pytest.mark.parametrize("monitor", [{"query-migrate": None}], indirect=True)
def test_a_command_qemu_never_answers_is_a_vm_error(monitor: Monitor) -> None:
    with pytest.raises(MonitorError, match=r"QMP did not answer within 0.2s") as caught:
        monitor.cmd("query-migrate", timeout=0.2)
    assert isinstance(caught.value, VMError)


@pytest.mark.parametrize("monitor", [{"stop": "hang up"}], indirect=True)
def test_a_monitor_that_hangs_up_mid_command_is_a_vm_error(monitor: Monitor) -> None:
    with pytest.raises(MonitorError) as caught:
        monitor.cmd("stop", timeout=5.0)
    assert isinstance(caught.value, VMError)
    assert not isinstance(caught.value, QMPCommandFailed)


@pytest.mark.parametrize("monitor", [{}], indirect=True)
def test_an_answered_command_returns_its_result(monitor: Monitor) -> None:
    assert monitor.cmd("query-status")["status"] == "running"
