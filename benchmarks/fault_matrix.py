"""The fault-injection suite's figures: crash points x stages recovered, bad inputs refused, pickles never run.

Runs the fault tests (slow tier included) with `SEQREC_FAULT_LOG` set, so each trial appends one line to a
log, then counts them into `benchmarks/results/fault_matrix.json`:
`crash_points`, `stages`, `trials` (kills that happened) and `recovered_identical` (re-runs that published
the same run id and files, with `verify` clean and nothing left over), `bad_inputs` and `bad_inputs_exit2`,
`pickle_sites` (malicious pickles planted where checkpoints and runs live) and `pickle_executed`, plus the
full-disk trials; `git_commit`, `command`, `machine` and `date` as every benchmark. About 20 minutes here.

    python -m benchmarks.fault_matrix
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from benchmarks import _args
from benchmarks._results import write
from pipeline.faults import POINTS

REPO = Path(__file__).resolve().parents[1]
TESTS = ["tests/test_crash_matrix.py", "tests/test_full_disk.py", "tests/test_damaged_runs.py",
         "tests/test_bad_input.py", "tests/test_store.py", "tests/test_resume_state.py",
         "tests/test_align_stage.py::test_a_killed_run_resumes_from_its_checkpoint_and_matches_an_uninterrupted_one",
         "tests/test_downstream_train.py::test_a_killed_run_resumes_and_ends_as_an_uninterrupted_one",
         "tests/test_recformer.py::test_killed_finetuning_resumes_mid_epoch_and_ends_as_an_uninterrupted_run",
         "tests/test_recformer.py::test_killed_pretraining_resumes_from_its_checkpoint_and_ends_as_an_uninterrupted_run",
         "tests/test_no_code_from_data.py", "tests/test_verify.py", "tests/test_non_finite.py",
         "tests/test_recformer.py::test_a_diverging_pretraining_stops_before_the_weights_take_it"]


def run_suite(log: Path, tests: list[str]) -> int:
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "slow or not slow", "-p", "no:cacheprovider",
                           *tests], cwd=REPO, env={**os.environ, "SEQREC_FAULT_LOG": str(log)}, check=False)
    return done.returncode


def figures(records: list[dict]) -> dict:
    crashes = [r for r in records if r["kind"] == "crash" and r["reached"]]
    disk = [r for r in records if r["kind"] == "full_disk"]
    bad = [r for r in records if r["kind"] == "bad_input"]
    pickles = [r for r in records if r["kind"] == "pickle"]
    return {
        "crash_points": list(POINTS),
        "stages": sorted({r["stage"] for r in records if r["kind"] == "crash"}),
        "trials": len(crashes),
        "recovered_identical": sum(r["recovered_identical"] for r in crashes),
        "crash_points_reached": sorted({r["point"] for r in crashes}),
        "trials_by_stage": dict(Counter(r["stage"] for r in crashes)),
        "full_disk_trials": len(disk),
        "full_disk_ran_out": sum(r["ran_out"] for r in disk),
        "full_disk_recovered_identical": sum(r["recovered_identical"] for r in disk),
        "bad_inputs": len(bad),
        "bad_inputs_exit2": sum(r["exit_code"] == 2 for r in bad),
        "pickle_sites": len(pickles),
        "pickle_executed": sum(r["executed"] for r in pickles),
    }


@_args.reports_errors
def main() -> None:
    parser = _args.parser(__doc__)
    parser.add_argument("--tests", nargs="+", default=TESTS, help="pytest node ids to run (default: the fault suite)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        log = Path(scratch) / "faults.jsonl"
        log.touch()
        status = run_suite(log, args.tests)
        records = [json.loads(line) for line in log.read_text().splitlines()]
    result = {**figures(records), "suite_exit_code": status}
    write("fault_matrix", result, [(key, result[key]) for key in (
        "trials", "recovered_identical", "full_disk_trials", "full_disk_recovered_identical", "bad_inputs",
        "bad_inputs_exit2", "pickle_sites", "pickle_executed", "suite_exit_code")])
    if status:
        _args.fail(f"the fault suite failed (pytest exit {status})", status)


if __name__ == "__main__":
    main()
