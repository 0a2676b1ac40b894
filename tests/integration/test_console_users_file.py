"""`vetro serve` reads the console's users file when it starts: a broken one is refused then, in one line,
not found at the first request."""

from __future__ import annotations

import pytest

from tests.helpers import vetro
from vetro.testing.processes import free_port

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ('{"users": ', "not a users file (JSONDecodeError: Expecting value"),
        ('["ana"]', 'expected {"users": {name: {"role": ..., "password": ...}}}'),
        ('{"users": {"ana": "operator"}}', 'user \'ana\' is not {"role": ..., "password": ...}'),
        ('{"users": {"ana": {"role": "boss"}}}', "role 'boss': expected viewer, operator or admin"),
        (b"\xff\xfe", "not a users file (UnicodeDecodeError"),
    ],
)
def test_a_users_file_that_cannot_be_read_stops_the_server_at_start_in_one_line(tmp_path, content, says):
    path = tmp_path / "users.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    result = vetro("serve", "--port", str(free_port()), env={"VETRO_CONSOLE_USERS_FILE": str(path)}, timeout=30)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"error: the console's users file {path} (VETRO_CONSOLE_USERS_FILE): ")
    assert says in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert result.stdout == ""  # it never said it was serving


def test_a_missing_users_file_is_refused_as_before_by_the_settings(tmp_path):
    path = tmp_path / "none-yet.json"
    result = vetro("serve", "--port", str(free_port()), env={"VETRO_CONSOLE_USERS_FILE": str(path)}, timeout=30)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert f"VETRO_CONSOLE_USERS_FILE: no such file: {path} (make it with `vetro user add`)" in result.stderr
