"""TASKLIFT_FAIRNESS_WEIGHTS (issue 21 part 2, docs/flow-control.md): a JSON object of fairness keys and
integer weights 1-100; anything else stops the process at start with a message naming the setting."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from tasklift.settings import Settings
from tasklift.store.flow import weight_params


def test_weights_are_read_from_a_json_object_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKLIFT_FAIRNESS_WEIGHTS", '{"alice": 3, "bulk-importer": 1, "team b/eu": 100}')
    assert Settings().fairness_weights == {"alice": 3, "bulk-importer": 1, "team b/eu": 100}
    monkeypatch.delenv("TASKLIFT_FAIRNESS_WEIGHTS")
    assert Settings().fairness_weights == {}  # default: every principal weighs 1


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ('{"alice": 0}', "greater than or equal to 1"),
        ('{"alice": 101}', "less than or equal to 100"),
        ('{"alice": -2}', "greater than or equal to 1"),
        ('{"alice": "3"}', "valid integer"),
        ('{"alice": 2.5}', "valid integer"),
        ('{"alice": true}', "valid integer"),
        ('{"alice": null}', "valid integer"),
        ('{"": 2}', "not a fairness key"),
        ('{"a\\nb": 2}', "not a fairness key"),
        ('{"' + "k" * 129 + '": 2}', "not a fairness key"),
        ('["alice", 3]', "valid dictionary"),
        ("alice=3", "error parsing value"),
    ],
)
def test_a_bad_weight_stops_the_settings_with_a_message_naming_it(
    monkeypatch: pytest.MonkeyPatch, raw: str, says: str
) -> None:
    monkeypatch.setenv("TASKLIFT_FAIRNESS_WEIGHTS", raw)
    with pytest.raises((ValidationError, ValueError)) as caught:
        Settings()
    message = str(caught.value)
    assert "fairness_weights" in message and says in message, message


def test_the_statement_gets_two_parallel_arrays_and_empty_ones_without_weights() -> None:
    assert weight_params({"bob": 2, "alice": 3}) == {"w_keys": ["alice", "bob"], "w_values": [3, 2]}
    assert weight_params({}) == weight_params(None) == {"w_keys": [], "w_values": []}


@pytest.mark.parametrize("raw", ['{"alice": 0}', "alice=3"])
def test_a_process_with_a_bad_weight_stops_at_start_with_one_message(raw: str, tmp_path: Path) -> None:
    env = {**os.environ, "TASKLIFT_FAIRNESS_WEIGHTS": raw, "TASKLIFT_DATABASE_URL": "postgresql://nowhere.invalid/x"}
    tasklift = Path(sys.executable).parent / "tasklift"
    done = subprocess.run([str(tasklift), "reaper"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("tasklift: invalid settings") and "fairness_weights" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
