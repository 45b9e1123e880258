"""`python -m benchmarks`: list the benchmarks, run a chosen set, or render `benchmarks/README.md`.

    python -m benchmarks                       # every benchmark: full-size commands, run time here, last result
    python -m benchmarks run NAME [NAME ...] [-- ARGS]   # their documented commands; ARGS go to each benchmark
    python -m benchmarks table [--check]       # write benchmarks/README.md and README.md's scale figures (--check: compare)

Exit codes as the product's: 2 for an unknown name or option, a failed command's own code otherwise.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys

from benchmarks import _args
from benchmarks._catalog import BENCHMARKS, Benchmark, by_name
from benchmarks._results import ROOT, results_dir
from benchmarks._table import README, TOP_README, render_readme, render_top_readme
from pipeline.errors import EXIT_FAILURE


def last_run(benchmark: Benchmark) -> str:
    """When its first figure was last written, and how long that run took where it was recorded."""
    path = results_dir() / f"{benchmark.figures[0].result}.json"
    if not path.is_file():
        return "not measured yet"
    record = json.loads(path.read_text())
    took = f", {record['run_wall_s']:.0f} s" if "run_wall_s" in record else ""
    return f"{record['date'][:16].replace('T', ' ')}{took} ({path.relative_to(results_dir())})"


def listing() -> str:
    """Every benchmark with its commands, expected run time, needs and last result."""
    blocks = []
    for benchmark in BENCHMARKS:
        lines = [f"{benchmark.name} (expected: {benchmark.expected}; last result: {last_run(benchmark)})"]
        lines += [f"    {command}" for command in benchmark.commands]
        lines += [f"    needs: {benchmark.needs}"] if benchmark.needs else []
        blocks.append("\n".join(lines))
    return "\n".join(blocks)


def argv_of(command: str, extra: list[str]) -> tuple[dict[str, str], list[str]]:
    """A documented command as (environment, argv): leading VAR=value words set the environment, `python` is
    this interpreter."""
    words = shlex.split(command)
    env = dict(os.environ)
    while words and "=" in words[0]:
        key, _, value = words.pop(0).partition("=")
        env[key] = value
    if words[0] == "python":
        words[0] = sys.executable
    return env, [*words, *extra]


def run(names: list[str], extra: list[str]) -> None:
    """Run each named benchmark's commands in order from the repository root; stop at the first failure."""
    known = by_name()
    if unknown := [name for name in names if name not in known]:
        _args.fail(f"run: no benchmark {', '.join(unknown)} (these are: {', '.join(known)})")
    for name in names:
        commands = known[name].commands
        for n, command in enumerate(commands):
            env, argv = argv_of(command, extra if n == len(commands) - 1 else [])
            print(f"[{name}] {shlex.join(argv)}", file=sys.stderr, flush=True)
            code = subprocess.run(argv, cwd=ROOT, env=env, check=False).returncode
            if code:
                _args.fail(f"{name}: `{command}` failed with exit code {code}", code)


def table(check: bool) -> None:
    """Write benchmarks/README.md and the top-level README's scale figures, or with `check` exit 1 when a
    committed one differs from the rendering."""
    for path, text in ((README, render_readme()), (TOP_README, render_top_readme(TOP_README.read_text()))):
        if not check:
            path.write_text(text)
        elif path.read_text() != text:
            _args.fail(f"{path.relative_to(ROOT)} differs from the result files: run `python -m benchmarks table`",
                       EXIT_FAILURE)


def main(argv: list[str]) -> None:
    words, extra = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    action, rest = (words[0], words[1:]) if words else ("list", [])
    if action in ("-h", "--help"):
        print(__doc__)
    elif action == "list" and not rest:
        print(listing())
    elif action == "run" and rest:
        run(rest, extra)
    elif action == "table" and rest in ([], ["--check"]):
        table(check=bool(rest))
    else:
        _args.fail(f"{' '.join(argv)}: expected `list`, `run NAME [NAME ...] [-- ARGS]` or `table [--check]`")


if __name__ == "__main__":
    main(sys.argv[1:])
