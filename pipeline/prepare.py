"""`seqrec-pipeline prepare`: raw files -> canonical dataset run (items, interactions with split, manifest)."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

from pipeline import dataset, dataset_sql, engine, events
from pipeline.config import DataConfig, PipelineConfig
from pipeline.contracts.dataset import write_dataset
from pipeline.ingest import amazon, canonical, lcrec, movielens, recbole, table, unisrec
from pipeline.ingest.tabular import parquet_parts, require_file
from pipeline.integrity import sha256_file
from pipeline.run_ids import code_identity, stage_run_id
from pipeline.store import RunResult, publish_run, workspace_output

READERS: dict[str, ModuleType] = {
    "recbole_atomic": recbole,
    "unisrec": unisrec,
    "lcrec": lcrec,
    "movielens": movielens,
    "table": table,
    "amazon": amazon,
    "canonical": canonical,
}
HOW_NOT_WHAT = {"path", "engine", "memory_limit_gib"}  # data settings that never change the dataset made
FILTER_NAMES = {"unknown_items": "unknown items (data.drop_unknown_items)", "duplicates": "repeats (data.dedup)",
                "kcore": "k-core (data.kcore_users, data.kcore_items)", "max_history": "data.max_history"}


def _file_facts(path: Path) -> dict[str, object]:
    return {"path": str(path.resolve()), "bytes": path.stat().st_size, "sha256": sha256_file(path)}


def source_facts(config: PipelineConfig) -> list[dict[str, object]]:
    """The raw files `data` names, with their sizes and sha256 (a dataset run's inputs). A partitioned Parquet
    folder counts as its part files, each with its `member` path inside the folder (hive folder names hold values)."""
    facts: list[dict[str, object]] = []
    for path in READERS[config.data.format].files(config.data):
        if path.is_dir():
            facts.extend({**_file_facts(part), "member": str(part.relative_to(path))} for part in parquet_parts(path))
        else:
            facts.append(_file_facts(require_file(path)))
    return facts


def run_id(config: PipelineConfig, sources: list[dict[str, object]]) -> str:
    """The dataset run's id: the `data` settings and the raw files' content.

    Where the files lie (`data.path`) is left out: their sha256 is hashed, so the same files read from a
    moved or re-mounted folder, or named by an absolute instead of a relative path, give the same run. So are
    the engine and its memory limit: both engines make the same dataset.
    """
    settings = config.data.model_dump(mode="json", exclude=HOW_NOT_WHAT)
    contents = [f"{fact['member']}:{fact['sha256']}" if "member" in fact else fact["sha256"] for fact in sources]
    return stage_run_id("prepare", settings, contents, code=code())


def code() -> str:
    """The identity of the code that makes dataset runs."""
    return code_identity(("pipeline.prepare",))


def _build_in_memory(reader: ModuleType, config: DataConfig, folder: Path, steps: events.Tracker) -> dict:
    raw = reader.read(config)
    steps.advance(rows=raw.interactions.num_rows)
    made = dataset.build(raw, config)
    steps.advance()
    write_dataset(folder, made.items, made.interactions)
    return made.facts


def _build_out_of_core(reader: ModuleType, config: DataConfig, folder: Path, steps: events.Tracker) -> dict:
    with dataset_sql.engine(engine.scratch_folder(folder), config.memory_limit_gib) as db:
        made = dataset_sql.build(db, reader, config)
        steps.advance(rows=made.facts["counts_raw"]["interactions"])
        steps.advance()
        write_dataset(folder, made.items, made.interactions)
    return made.facts


@events.in_stage("prepare")
def run(config: PipelineConfig, force: bool = False) -> RunResult:
    """Read, process and publish the dataset; a no-op when the same files and config were published."""
    reader = READERS[config.data.format]
    sources = source_facts(config)
    data_config = config.data.model_dump(mode="json")

    def build(folder: Path) -> dict:
        chosen = engine.choose(config.data, reader)
        events.emit("reading", f"reading {config.data.format} data from {config.data.path} ({chosen} engine)")
        with events.Tracker(f"prepare {config.data.name}", total=3, unit="steps") as steps:
            made = (_build_out_of_core if chosen == "duckdb" else _build_in_memory)(reader, config.data, folder, steps)
            steps.advance()
        counts, removed = made["counts"], made["removed"]
        dropped = ", ".join(f"{FILTER_NAMES[name]} {n:,}" for name, n in removed.items() if n) or "nothing"
        events.emit("prepared", f"{config.data.name}: {counts['users']:,} users, {counts['items']:,} items, "
                    f"{counts['interactions']:,} interactions; interactions removed: {dropped}", **counts,
                    removed=removed)
        return {"kind": "dataset", "code_identity": code(), "name": config.data.name, "format": config.data.format,
                "engine": chosen, "sources": sources, "config": data_config, **made}

    output = workspace_output(config, "datasets")
    made = run_id(config, sources)
    events.making(made)
    return publish_run(output, made, build, force=force, lock_wait_s=config.workspace.lock_wait_s,
                       stale_lock_s=config.workspace.stale_lock_s)
