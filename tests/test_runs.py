"""Run folders, atomic writes and status files (core/runs.py)."""

from __future__ import annotations

import json

import pytest

from core.runs import (RunError, append_jsonl, atomic_save, atomic_write_json, atomic_write_text, list_runs,
                       new_run_id, read_jsonl, read_status, run_info, safe_run_id, write_status)


class Boom(RuntimeError):
    pass


def test_atomic_write_keeps_the_old_file_when_the_writer_fails_half_way(tmp_path):
    target = tmp_path / "model.bin"
    target.write_bytes(b"old complete contents")

    def half_then_crash(path):
        with open(path, "wb") as out:
            out.write(b"new but only ha")
            out.flush()
        raise Boom("disk full")

    with pytest.raises(Boom):
        atomic_save(target, half_then_crash)
    assert target.read_bytes() == b"old complete contents"
    assert [p.name for p in tmp_path.iterdir()] == ["model.bin"]  # no temporary file left behind


def test_atomic_write_json_refuses_nan_and_keeps_the_old_file(tmp_path):
    target = tmp_path / "metrics.json"
    atomic_write_json(target, {"accuracy": 0.5})
    with pytest.raises(ValueError):
        atomic_write_json(target, {"accuracy": float("nan")})
    assert json.loads(target.read_text()) == {"accuracy": 0.5}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_atomic_write_replaces_and_creates_parent_folders(tmp_path):
    target = tmp_path / "a" / "b" / "notes.txt"
    atomic_write_text(target, "one")
    atomic_write_text(target, "two")
    assert target.read_text() == "two"


def test_status_round_trip(tmp_path):
    write_status(tmp_path, "running", "", created=123.0)
    assert read_status(tmp_path)["status"] == "running"
    write_status(tmp_path, "cancelled", "stopped by the user", created=123.0, best_epoch=2)
    status = read_status(tmp_path)
    assert status["status"] == "cancelled" and status["message"] == "stopped by the user"
    assert status["created"] == 123.0 and status["best_epoch"] == 2
    with pytest.raises(AssertionError):
        write_status(tmp_path, "exploded")


def test_missing_or_torn_status_reads_as_unknown(tmp_path):
    assert read_status(tmp_path)["status"] == "unknown"
    (tmp_path / "status.json").write_text('{"status": "runn')
    assert read_status(tmp_path)["status"] == "unknown"


def _make_run(runs_dir, run_id, created, status="completed", metrics=None):
    folder = runs_dir / run_id
    atomic_write_json(folder / "config.json", {"run": {}})
    write_status(folder, status, "", created=created)
    if metrics is not None:
        atomic_write_json(folder / "metrics.json", metrics)
    return folder


def test_list_runs_newest_first_and_skips_folders_that_are_not_runs(tmp_path):
    _make_run(tmp_path, "old", 100.0)
    _make_run(tmp_path, "newest", 300.0, status="cancelled")
    _make_run(tmp_path, "middle", 200.0, metrics={"test": {"primary": {"accuracy": 0.9}}})
    (tmp_path / "not-a-run").mkdir()
    (tmp_path / "not-a-run" / "notes.txt").write_text("hello")
    (tmp_path / "stray-file.json").write_text("{}")
    runs = list_runs(tmp_path)
    assert [r.run_id for r in runs] == ["newest", "middle", "old"]
    assert runs[0].status == "cancelled"
    assert runs[1].metrics["test"]["primary"]["accuracy"] == 0.9
    assert not runs[1].has_model
    assert list_runs(tmp_path / "nowhere") == []


def test_run_info_on_a_folder_that_is_not_a_run(tmp_path):
    with pytest.raises(RunError, match="not a run directory"):
        run_info(tmp_path)


def test_jsonl_append_and_torn_last_line(tmp_path):
    path = tmp_path / "history.jsonl"
    assert read_jsonl(path) == []
    append_jsonl(path, {"epoch": 1})
    append_jsonl(path, {"epoch": 2})
    with open(path, "a") as out:
        out.write('{"epoch": 3, "tra')  # a crash mid-line
    assert read_jsonl(path) == [{"epoch": 1}, {"epoch": 2}]


def test_run_ids():
    run_id = new_run_id()
    assert safe_run_id(run_id) == run_id and run_id != new_run_id()
    for bad in ["", "../escape", "a/b", ".hidden", "x" * 200]:
        with pytest.raises(RunError, match="not a valid run id"):
            safe_run_id(bad)
