from __future__ import annotations

import json
from pathlib import Path

import pytest

from churn_spark.cli import entrypoint_argv, execute, main
from churn_spark.config import Settings


def test_missing_config_is_one_line_and_exit_2(capsys) -> None:
    assert main(["--config", "does-not-exist.yaml", "train"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: config file not found: does-not-exist.yaml"


def test_invalid_config_value_names_the_field(tmp_path, capsys) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("churn:\n  grace_days: -3\n")
    assert main(["--config", str(cfg), "train"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: invalid config: churn.grace_days:")


def test_bad_flag_value_is_a_usage_error(capsys) -> None:
    assert main(["generate", "--accounts", "many"]) == 2
    assert "Invalid value for '--accounts'" in capsys.readouterr().err


def test_entrypoint_moves_global_flags_in_front() -> None:
    argv = ["--from", "2024-01-01", "--config", "/etc/c.yaml", "--to", "2024-02-01", "--lakehouse", "s3a://b/l"]
    assert entrypoint_argv("features", argv) == [
        "--config", "/etc/c.yaml", "--lakehouse", "s3a://b/l", "features", "--from", "2024-01-01", "--to", "2024-02-01"]


def _summaries(settings: Settings) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(Path(settings.lakehouse, "runs").glob("*.json"))]


def test_execute_writes_a_run_summary(spark, settings: Settings) -> None:
    out = execute(settings, "probe", lambda s, cfg: {"rows": s.range(3).count(), "root": cfg.lakehouse}, {"x": 1},
                  spark=spark)
    assert out["status"] == "succeeded"
    (summary,) = _summaries(settings)
    assert summary["job"] == "probe" and summary["args"] == {"x": 1}
    assert summary["result"] == {"rows": 3, "root": settings.lakehouse}


def test_failed_job_records_failure_and_raises(spark, settings: Settings) -> None:
    def boom(s, cfg):  # type: ignore[no-untyped-def]
        raise RuntimeError("input table is empty\nsecond line")

    with pytest.raises(RuntimeError):
        execute(settings, "probe", boom, spark=spark)
    (summary,) = _summaries(settings)
    assert summary["status"] == "failed"
    assert summary["error"] == "RuntimeError: input table is empty"
