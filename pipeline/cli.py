"""The `seqrec-pipeline` command line: parse options, load config, dispatch to plain functions.

Exit codes: 0 success; 1 unexpected failure; 2 bad input (a file, row, column, config key or
command-line option); 3 the output is locked by another job.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer

from pipeline import api, default_data, events, sources
from pipeline.config import PipelineConfig, code_release, explained, load_config, resolve_config
from pipeline.errors import EXIT_FAILURE, BadInput, PipelineError
from pipeline.sources import WORKSPACE_ENV
from pipeline.store import workspace_output

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Text-aligned item embeddings and light sequential recommenders, as batch stages.")

ConfigOption = Annotated[Path | None, typer.Option("--config", "-c", help="YAML laid over pipeline.yaml's defaults.")]
SetOption = Annotated[list[str] | None, typer.Option("--set", help="Dotted override, e.g. data.kcore_users=0 (repeatable).")]
ForceOption = Annotated[bool, typer.Option("--force", help="Re-run even when the same inputs and config were published.")]
FullOption = Annotated[bool, typer.Option("--full", help="Embed every item, ignoring published runs to build on.")]
LogOption = Annotated[events.LogFormat, typer.Option("--log-format", help="text for people, json for schedulers (one object per line).")]

F = TypeVar("F", bound=Callable[..., object])
_globals: dict[str, str | None] = {"workspace": None}


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"seqrec-pipeline {code_release()}")
        raise typer.Exit()


@app.callback()
def options(workspace: Annotated[str | None, typer.Option(
                "--workspace", "-w", help=f"workspace.root for this command (else ${WORKSPACE_ENV}, the config file, "
                "or ./artifacts).")] = None,
            version: Annotated[bool, typer.Option("--version", callback=_show_version, is_eager=True,
                                                  help="Print the installed release and exit.")] = False) -> None:
    """Options before the command name apply to every command: `seqrec-pipeline --workspace /srv/recs run`."""
    _globals["workspace"] = workspace


def reports_errors(command: F) -> F:
    """Turn pipeline errors into one line on stderr and their exit code; anything else exits 1."""
    @functools.wraps(command)
    def wrapper(*args: object, **kwargs: object) -> object:
        events.set_format(kwargs.get("log_format", "text"))  # type: ignore[arg-type]
        try:
            return command(*args, **kwargs)
        except PipelineError as exc:
            events.emit("error", f"error: {exc}", exit_code=exc.exit_code)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            events.emit("error", "error: interrupted", exit_code=130)
            raise typer.Exit(130) from None
        except Exception as exc:  # noqa: BLE001 - the last line of defence: one line, exit 1
            events.emit("error", f"error: {type(exc).__name__}: {' '.join(str(exc).split())}", exit_code=EXIT_FAILURE)
            raise typer.Exit(EXIT_FAILURE) from None
    return wrapper  # type: ignore[return-value]


def _config(path: Path | None, overrides: list[str] | None) -> PipelineConfig:
    return load_config(path, overrides or [], _globals["workspace"])


@app.command("config")
@reports_errors
def show_config(config: ConfigOption = None, set_: SetOption = None, log_format: LogOption = "text",
                explain: Annotated[str | None, typer.Option(
                    "--explain", metavar="KEY", help="Describe KEY (a key or a section) instead: each key's value "
                    "and what it does.")] = None) -> None:
    """Print the resolved config as YAML, each value followed by where it came from (default, file, --set)."""
    resolved = resolve_config(config, set_ or [], _globals["workspace"])
    if explain is None:
        typer.echo("\n".join(sources.render(resolved.tree, resolved.sources)))
        return
    typer.echo("\n".join(explained(resolved.tree, explain)))


@app.command()
@reports_errors
def prepare(config: ConfigOption = None, set_: SetOption = None, force: ForceOption = False,
            log_format: LogOption = "text") -> None:
    """Turn raw data into the canonical dataset (items, interactions, split, manifest)."""
    typer.echo(api.prepare(_config(config, set_), force=force).run_dir)


@app.command()
@reports_errors
def align(config: ConfigOption = None, set_: SetOption = None, force: ForceOption = False,
          full: FullOption = False, log_format: LogOption = "text") -> None:
    """Stage one: learn item embeddings with a frozen LM (align.method) and publish Parquet + FAISS.

    Over a published run made with the same settings, only new items and items whose text changed are
    embedded (an unchanged catalog: that run is reused). Works under `accelerate launch`. A killed run
    resumes from its last checkpoint when run again.
    """
    result = api.align(_config(config, set_), force=force, full=full)
    if result is not None:  # None: a helper process under `accelerate launch`
        typer.echo(result.run_dir)


@app.command()
@reports_errors
def inspect(path: Annotated[Path | None, typer.Argument(
                help="A run folder, or an output folder (its `latest` run); default: the configured dataset.")] = None,
            config: ConfigOption = None, set_: SetOption = None, log_format: LogOption = "text") -> None:
    """Print a dataset's or artifact's facts (counts, distributions, split sizes, manifest) as JSON."""
    from pipeline.describe import describe

    target = path if path is not None else workspace_output(_config(config, set_), "datasets").path
    typer.echo(json.dumps(describe(target), indent=2, default=str))


@app.command("fetch-default-data")
@reports_errors
def fetch_default_data(config: ConfigOption = None, set_: SetOption = None, log_format: LogOption = "text") -> None:
    """Download the default dataset (ml-100k, read out of the recbole==1.2.1 wheel) into data.path."""
    cfg = _config(config, set_)
    default_data.fetch(Path(cfg.data.path), Path(cfg.workspace.root) / "downloads")


@app.command("train-downstream")
@reports_errors
def train_downstream(config: ConfigOption = None, set_: SetOption = None, force: ForceOption = False,
                     log_format: LogOption = "text") -> None:
    """Train a sequential recommender on the latest dataset and item embeddings; evaluate; publish."""
    trained = api.train_downstream(_config(config, set_), force=force)
    if trained is not None:  # None: a helper process under `accelerate launch`
        typer.echo(trained.run_dir)


@app.command()
@reports_errors
def evaluate(run: Annotated[str, typer.Argument(help="A downstream run: latest, a run id or a folder.")] = "latest",
             config: ConfigOption = None, set_: SetOption = None, log_format: LogOption = "text") -> None:
    """Re-evaluate a downstream run with downstream.evaluate's settings; print metrics.json's content."""
    evaluated = api.evaluate(_config(config, set_), run)
    typer.echo(json.dumps({"run_dir": str(evaluated.run_dir), **evaluated.metrics}, indent=2))


@app.command()
@reports_errors
def recommend(config: ConfigOption = None, set_: SetOption = None, force: ForceOption = False,
              user: Annotated[list[str] | None, typer.Option("--user", help="A user id (repeatable); default: recommend.users.")] = None,
              histories: Annotated[Path | None, typer.Option("--histories", help="Parquet or CSV (user_id, item_id, in "
                                   "time order): recommend after these histories instead of the dataset's.")] = None,
              log_format: LogOption = "text") -> None:
    """Write top-K recommendations (recommendations.parquet) for every user or the given ones.

    Histories come from the latest dataset run (or --histories) and candidates are every item of the
    latest catalog, items that arrived after the model was trained included.
    """
    typer.echo(api.recommend(_config(config, set_), users=user, histories=histories, force=force).run_dir)


@app.command("run")
@reports_errors
def run_all(config: ConfigOption = None, set_: SetOption = None, force: ForceOption = False,
            full: FullOption = False,
            dry_run: Annotated[bool, typer.Option("--dry-run", help="Print each stage's plan and estimated time "
                                                  "(measured on a short warm-up); train and publish nothing.")] = False,
            log_format: LogOption = "text") -> None:
    """The main job and the scheduled refresh: prepare, align, train-downstream, recommend.

    Each stage reads the run the previous one just published (never whatever `latest` is by then). Stage
    one embeds only new and changed items over a published run made with the same settings.
    """
    cfg = _config(config, set_)
    if dry_run:
        from pipeline.dry_run import plan_lines

        typer.echo("\n".join(plan_lines(cfg)))
        return
    job = api.run(cfg, force=force, full=full)
    if job is None:  # a helper process under `accelerate launch`: the main process carries on alone
        return
    for made in (job.dataset, job.embeddings, job.downstream, job.recommendations):
        if made is not None:
            typer.echo(made.run_dir)
    if cfg.report.on_run:
        _write_report(cfg, [job.downstream.run_dir], None)


def _write_report(cfg: PipelineConfig, run_dirs: list[Path], out: Path | None) -> None:
    """Write the HTML report and print its path (imported here: matplotlib is needed for reports only)."""
    from pipeline.report.build import write_report

    path = write_report(cfg, run_dirs, out)
    events.emit("report", f"report: {path}", path=str(path))
    typer.echo(path)


@app.command()
@reports_errors
def report(runs: Annotated[list[str] | None, typer.Argument(
               help="Downstream runs: latest, run ids or folders; several make a comparison (default: latest).")] = None,
           out: Annotated[Path | None, typer.Option("--out", "-o", help="The HTML file to write; default: "
                                                    "report.dir/<run id>.html or compare-<hash>.html.")] = None,
           config: ConfigOption = None, set_: SetOption = None, log_format: LogOption = "text") -> None:
    """Write one self-contained, offline HTML page: a downstream run and its inputs, or several runs compared.

    Dataset distributions, stage one's loss curve, evidence, embedding map and nearest neighbours, stage
    two's curves and test metrics beside popularity, and every run's config, linked to its folder.
    """
    from pipeline.report.runs import resolve

    cfg = _config(config, set_)
    output = workspace_output(cfg, "downstream")
    _write_report(cfg, [resolve(output, ref) for ref in runs or ["latest"]], out)


@app.command()
@reports_errors
def status(config: ConfigOption = None, set_: SetOption = None, log_format: LogOption = "text") -> None:
    """What is published per stage, and what `run` would do next and why (nothing is trained or written)."""
    from pipeline import status as status_report

    report = api.status(_config(config, set_))
    typer.echo(json.dumps(report, indent=2) if log_format == "json" else "\n".join(status_report.lines(report)))


@app.command()
@reports_errors
def gc(keep: Annotated[int, typer.Option("--keep", min=1, help="Published runs to keep per output, newest first.")] = 3,
       delete: Annotated[bool, typer.Option("--delete", help="Delete; without it, only list what would go.")] = False,
       config: ConfigOption = None, set_: SetOption = None, log_format: LogOption = "text") -> None:
    """Delete old runs: never one `latest` points to, one of the newest --keep, or one a kept run reads.

    A dry run unless --delete. Outputs locked by a running job are left alone.
    """
    from pipeline import gc as collector

    cfg = _config(config, set_)
    done = collector.collect(Path(cfg.workspace.root), keep, delete, cfg.workspace.lock_wait_s, cfg.workspace.stale_lock_s)
    verb = "deleted" if delete else "would delete"
    for run in done.deleted:
        events.emit("gc", f"{verb} {run.run_dir}", run_dir=str(run.run_dir), deleted=delete)
    events.emit("gc_done", f"{verb} {len(done.deleted)} runs, kept {len(done.kept)}"
                + ("" if delete else " (dry run: add --delete)"), deleted=len(done.deleted), kept=len(done.kept))


@app.command()
@reports_errors
def verify(path: Annotated[Path | None, typer.Argument(
               help="A workspace root, an output folder or one run folder; default: workspace.root.")] = None,
           repair: Annotated[bool, typer.Option("--repair", help="Remove leftovers of killed jobs (never a "
                                                "published run's files).")] = False,
           config: ConfigOption = None, set_: SetOption = None, log_format: LogOption = "text") -> None:
    """Check published runs against their manifests (files, sizes, sha256, Parquet, FAISS, `latest`) and report
    leftovers of killed jobs. Exit 0 when clean, 2 with findings."""
    from pipeline import verify as checks

    target = path if path is not None else Path(_config(config, set_).workspace.root)
    report = checks.verify(target)
    for note in report.notes:
        events.emit("verify_note", f"note: {note}")
    for finding in report.findings:
        events.emit("verify_finding", f"{finding.path}: {finding.problem}" + (" [leftover]" if finding.leftover else ""),
                    path=str(finding.path), leftover=finding.leftover)
    if repair:
        removed = checks.repair(report)
        events.emit("verify_repaired", f"removed {len(removed)} leftovers", removed=[str(p) for p in removed])
        report = checks.verify(target)
    events.emit("verified", f"{report.runs} runs checked under {target}: {len(report.findings)} findings",
                runs=report.runs, findings=len(report.findings))
    if report.findings:
        raise BadInput(f"{target}: {len(report.findings)} findings")


def stop_on_sigterm() -> None:
    """Schedulers stop jobs with SIGTERM: unwind like Ctrl-C, so locks are released and partial runs
    handled as after any interruption (exit code 130)."""
    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def leave_process_group() -> None:
    """Under `accelerate launch`, destroy the process group before the interpreter exits: gloo's worker threads
    outlive a group nobody destroyed and can abort a process that finished its work ("terminate called
    without an active exception", SIGABRT), which fails the whole launch. Torch is only looked at if a
    command imported it."""
    distributed = sys.modules.get("torch.distributed")
    if distributed is not None and distributed.is_available() and distributed.is_initialized():
        distributed.destroy_process_group()


def main() -> None:
    stop_on_sigterm()
    # The stages print their own progress; the model libraries' loading bars would only interleave with it
    # (read when transformers is first imported; HF_HUB_DISABLE_PROGRESS_BARS=0 brings them back).
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        app(prog_name="seqrec-pipeline")
    finally:
        leave_process_group()


if __name__ == "__main__":
    sys.exit(main())
