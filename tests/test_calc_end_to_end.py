"""The README walkthrough: generated stubs, a real server process, a separate client process."""

from __future__ import annotations

import shutil
from pathlib import Path

from support import EXAMPLES, ServerProcess, generate_stubs, run_client


def test_walkthrough_with_client_in_another_folder(
    calc_server: ServerProcess, tmp_path: Path
) -> None:
    client_dir = tmp_path / "client"
    (client_dir / "calc").mkdir(parents=True)
    shutil.copy(calc_server.project / "calc" / "__init__.py", client_dir / "calc")
    shutil.copy(calc_server.project / "calc" / "calc_interface.py", client_dir / "calc")
    shutil.copy(calc_server.project / "srpc_calc_client_stub.py", client_dir)
    code = (
        (EXAMPLES / "calc" / "client" / "client.py")
        .read_text()
        .replace(
            'SrpcCalcClientStub("127.0.0.1")',
            f'SrpcCalcClientStub("127.0.0.1", {calc_server.port})',
        )
    )
    result = run_client(client_dir, code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "6",
        "8",
        "2",
        "2.0",
        "ZeroDivisionError: division by zero",
    ]
    assert not (client_dir / "calc" / "calc.py").exists()  # the client never needs it


def test_example_stubs_are_current() -> None:
    """The stubs committed under examples/ match what the generator writes today."""
    for side in ("server", "client"):
        result = generate_stubs(
            EXAMPLES / "calc" / side, "calc/calc_interface.py", "--check", "--only", side
        )
        assert result.returncode == 0, result.stdout + result.stderr
