"""spark-submit entrypoint for the scheduled nightly run: ingest --once, features and score for one date.

A ScheduledSparkApplication runs one application and cannot template dates, so this driver runs the
three stages in sequence in one session and resolves the date itself: `--as-of` (default
`month-start`, the latest monthly snapshot; an ISO date or `today`/`yesterday` also work). Global
flags (--config, --lakehouse, --master) are accepted anywhere, as for every job; `--source` goes to
ingest, `--model-version` and `--allow-stale-feed` to score. The first stage that fails stops the run
with its exit code. With `scoring.targeting.mode: uplift` in the config, score targets by the registered
uplift model (docs/uplift.md; `jobs/uplift_train.py` registers it after each campaign) and fails in one line,
before writing anything, when none is registered.
"""

from __future__ import annotations

import argparse
import sys

from churn_spark.cli import GLOBAL_FLAGS, resolve_date, run_entrypoint


def stages(argv: list[str]) -> list[tuple[str, list[str]]]:
    """The (command, arguments) the nightly run executes, in order."""
    parser = argparse.ArgumentParser(prog="nightly", add_help=False)
    for flag in GLOBAL_FLAGS:
        parser.add_argument(flag)
    parser.add_argument("--debug", action="store_true")
    parser.add_argument("--as-of", default="month-start")
    parser.add_argument("--source")
    parser.add_argument("--model-version")
    parser.add_argument("--allow-stale-feed", action="store_true")
    opts = parser.parse_args(argv)
    common = [x for flag in GLOBAL_FLAGS if (v := getattr(opts, flag[2:])) for x in (flag, v)]
    if opts.debug:
        common.append("--debug")
    day = resolve_date(opts.as_of, option="--as-of")
    ingest = [*common, "--once", *(["--source", opts.source] if opts.source else [])]
    score = [*common, "--as-of", str(day), *(["--model-version", opts.model_version] if opts.model_version else []),
             *(["--allow-stale-feed"] if opts.allow_stale_feed else [])]
    return [("ingest", ingest), ("features", [*common, "--from", str(day), "--to", str(day)]), ("score", score)]


def main(argv: list[str] | None = None) -> int:
    for command, args in stages(list(sys.argv[1:] if argv is None else argv)):
        code = run_entrypoint(command, args)
        if code != 0:
            return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
