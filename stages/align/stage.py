"""`seqrec-pipeline align`: a dataset run's items -> item embeddings run (Parquet + FAISS + checkpoint).

Stage one is keyed by the catalog: a run hashes its settings and its catalog (item ids and texts), not the
interactions. By default a run builds on the newest published run made with the same settings: over the
same catalog that run is reused as it is (no model loaded); over a changed catalog only new items and
items whose text changed are embedded, every other row is kept bit for bit and removed items are dropped.
With no such run, or with `full`, every item is embedded.

Runs unchanged on CPU, one GPU or under `accelerate launch`: every process trains or embeds its share and
writes it as its own part; the main process writes the rest (kept rows, index, manifest) through
`publish_run`. A killed run leaves its partial folder; the next run with the same config picks up its
checkpoints.
The method (`METHODS`: SAID, a frozen text encoder, Recformer, whose entry point is `stages/recformer/align.py`,
or the fusion of several, whose members are aligned first)
is chosen once; it names the model and the settings the run id hashes, and embeds the rows.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from accelerate import Accelerator
from accelerate.utils import set_seed

from pipeline import events
from pipeline.config import PipelineConfig
from pipeline.contracts import embeddings as contract
from pipeline.faults import crash_point
from pipeline.run_ids import code_identity, fingerprint, stage_run_id
from pipeline.store import RunResult, read_manifest, reuse_run, workspace_output
from pipeline.workspace import newest
from stages.accelerator import publish_on_every_process, stage_accelerator
from stages.align import export
from stages.align.catalog import Catalog, plan_rows, read_catalog
from stages.align.dist import own_peak_rss_gib, peak_rss_gib, say
from stages.align.evidence import attribute_sets, neighbour_rate
from stages.align.fuse_method import FuseMethod, member_configs
from stages.align.method import CHECKPOINTS, TOKENS_CACHE, AlignPlan, Embedded, Method
from stages.align.said_method import SaidMethod
from stages.align.text_method import TextMethod
from stages.recformer.align import RecformerMethod

METHODS: dict[str, Method] = {"said": SaidMethod(), "text": TextMethod(), "recformer": RecformerMethod(),
                              "fuse": FuseMethod()}


def code(method: str) -> str:
    """The identity of the code that makes `method`'s runs: stage one without the other methods' modules."""
    return code_identity(("stages.align.stage",),
                         tuple(type(other).__module__ for name, other in METHODS.items() if name != method))


def _config_hash(method: Method, config: PipelineConfig, model: dict[str, Any] | None,
                 members: tuple[str, ...] = ()) -> str:
    """The settings the method reads, its frozen model by its files' sha256, not its name (new weights under
    the same name are a new run, never an extension of one made with the old weights; where the model is read
    from and cached does not count), the member runs a fused run joins, and the code that reads them (a base
    run made by other code is never extended: its rows would mix two codes)."""
    return fingerprint(*method.settings_read(config), *([] if model is None else [model["sha256"]]), *members,
                       code(config.align.method))


def plan(config: PipelineConfig, dataset_dir: Path, full: bool = False, catalog: Catalog | None = None) -> AlignPlan:
    """Reuse, extend or redo: decided from the catalog (read here unless given) and the published runs made with
    the same settings."""
    dataset_run = read_manifest(dataset_dir)["run_id"]
    if catalog is None:
        catalog = read_catalog(dataset_dir, config.align.template, config.align.evidence.attribute)
    method = METHODS[config.align.method]
    model = method.model_identity(config)
    # a fused run's members as published (`run` aligns them first, with --full where asked)
    members = [plan(member, dataset_dir, catalog=catalog) for member in member_configs(config)] \
        if config.align.method == "fuse" else []
    config_hash = _config_hash(method, config, model, tuple(member.run_id for member in members))
    pretrain_dirs = method.pretrain_dirs(config)
    output = workspace_output(config, "embeddings")
    found = None if full else newest(output, lambda run: run.manifest.get("kind") == "embeddings"
                                      and run.manifest.get("config_hash") == config_hash)
    if found is not None and found.manifest.get("catalog_sha256") == catalog.fingerprint:
        return AlignPlan("reuse", f"catalog unchanged since run {found.run_id}: reused, nothing to embed",
                         found.run_id, catalog, plan_rows(catalog, None), None, config_hash, dataset_run, pretrain_dirs,
                         model, members)
    base = None if found is None else contract.read_embeddings(found.run_dir, vectors=False)
    rows = plan_rows(catalog, base)
    inputs = method.full_run_inputs(config, dataset_run, pretrain_dirs) if base is None else [base.run_id]
    run_id = stage_run_id("align", config_hash, catalog.fingerprint, *inputs, code=code(config.align.method))
    if base is not None:
        reason = (f"{rows.new:,} new items, {rows.changed:,} changed, {rows.removed:,} removed since run "
                  f"{base.run_id}: incremental")
        return AlignPlan("incremental", reason, run_id, catalog, rows, base, config_hash, dataset_run, pretrain_dirs,
                         model, members)
    latest = output.latest()
    if full:
        reason = f"--full: all {len(catalog.ids):,} items"
    elif latest is not None:
        made = read_manifest(latest)
        reason = (f"latest run {made.get('run_id')} was made with other settings, model files or code (method "
                  f"{made.get('method')}, model {made.get('model')}): full alignment of {len(catalog.ids):,} items")
    else:
        reason = f"no embeddings run yet: full alignment of {len(catalog.ids):,} items"
    return AlignPlan("full", reason, run_id, catalog, rows, None, config_hash, dataset_run, pretrain_dirs, model,
                     members)


def _carry_over(method: Method, planned: AlignPlan) -> Embedded:
    """Nothing to embed (only removals, or a base without a catalog fingerprint): no model is loaded."""
    base = planned.base
    assert base is not None  # a full run always has rows to embed
    return Embedded(np.zeros((0, base.dim), np.float32), {"evidence": {}}, base.manifest.get("model_source"),
                    None, lambda folder: method.carry_over(planned, folder))


@events.in_stage("align")
def run(config: PipelineConfig, force: bool = False, full: bool = False,
        dataset_dir: Path | None = None) -> RunResult | None:
    """Align the items of `dataset_dir` (default: the latest dataset run) and publish the embeddings.

    `force` re-runs the planned run (over an unchanged catalog: a full run); None on non-main processes.
    """
    align = config.align
    method = METHODS[align.method]
    accelerator = stage_accelerator(align.mixed_precision)
    if dataset_dir is None:
        dataset_dir = workspace_output(config, "datasets").require_latest("no dataset yet: run `prepare` first")
    if align.method == "fuse":  # the members first, each its own run (reused when published)
        for member in member_configs(config):
            run(member, full=full, dataset_dir=dataset_dir)
    output = workspace_output(config, "embeddings")
    planned = plan(config, dataset_dir, full)
    if planned.mode == "reuse" and force:
        planned = plan(config, dataset_dir, full=True)
    events.making(planned.run_id)
    say(accelerator)("align_plan", f"align: {planned.reason}", mode=planned.mode, run_id=planned.run_id)
    if planned.mode == "reuse":
        return reuse_run(output, planned.run_id, config.workspace.lock_wait_s, config.workspace.stale_lock_s) \
            if accelerator.is_main_process else None

    def build(folder: Path) -> dict[str, object]:
        set_seed(align.seed)
        rows, base = planned.rows, planned.base
        work = method.describe(config, len(rows.train)) if rows.train else ""
        say(accelerator)("aligning", f"{align.method}: {len(rows.train):,} of {len(planned.catalog.ids):,} items "
                         f"to embed{', ' + work if work else ''}" + (f" (incremental over {base.run_id})" if base else "")
                         + ("; `run --dry-run` prices it" if work else ""))
        if rows.train:
            embedded = method.embed(accelerator, config, planned, dataset_dir, folder)
        else:
            embedded = _carry_over(method, planned)
        started = time.perf_counter()
        meta = _metadata(config, method, planned)
        export.write_embedded(accelerator, folder, rows, embedded.vectors, embedded.offset, align.export.normalise,
                              meta)
        embedded.save_part(folder)
        memory = peak_rss_gib(accelerator)  # every process's parts are written
        if not accelerator.is_main_process:
            return embedded.facts
        facts = _export(config, planned, embedded, folder, accelerator, meta)
        memory[0] = own_peak_rss_gib()  # the main process also copied kept rows and filled the index
        return {**facts, "export_seconds": round(time.perf_counter() - started, 2), "peak_rss_gib": memory}

    # The tokens and checkpoints go only once the run is published: until then a crash resumes from them.
    return publish_on_every_process(output, planned.run_id, build, force=force, keep_partial=True,
                                    scratch=(CHECKPOINTS, TOKENS_CACHE), lock_wait_s=config.workspace.lock_wait_s,
                                    stale_lock_s=config.workspace.stale_lock_s)


def _metadata(config: PipelineConfig, method: Method, planned: AlignPlan) -> dict[str, str]:
    """What every part's schema metadata says about the run."""
    align = config.align
    return {"method": align.method, "model": method.model_name(config), "normalisation": align.export.normalise,
            "config_hash": planned.config_hash, "code_identity": code(align.method),
            "dataset_run_id": planned.dataset_run_id, "catalog_sha256": planned.catalog.fingerprint,
            "pooling": method.pooling(config)}


def _export(config: PipelineConfig, planned: AlignPlan, embedded: Embedded, folder: Path, accelerator: Accelerator,
            meta: dict[str, str]) -> dict[str, object]:
    """After every process wrote its part (main process): the kept rows, the method's files, the index and the
    evidence; the manifest facts (`meta`: what every part's schema metadata says)."""
    align, rows, base = config.align, planned.rows, planned.base
    base_dir = None if base is None else base.run_dir
    dim = embedded.vectors.shape[1]
    if base_dir is not None:  # kept rows are copied as stored (bit for bit); only rows embedded now are normalised
        export.copy_kept(folder, base_dir, rows, dim, meta)
    crash_point("export.halfway")
    embedded.save(folder)
    spec = export.IndexSpec(align.export.index, align.export.hnsw_m, align.export.ivf_lists, align.export.pq_m)
    index = export.fill_index(spec, folder, base_dir, rows, dim, align.seed)
    facts = embedded.facts
    if planned.catalog.attribute is not None:
        by_id = dict(zip(planned.catalog.ids, planned.catalog.attribute))
        values = attribute_sets([by_id.get(item) for item in rows.ids], align.evidence.separator)
        facts["evidence"]["neighbours"] = {"attribute": align.evidence.attribute, **neighbour_rate(
            index, lambda asked: contract.read_rows(folder, asked), values, align.evidence.neighbour_queries,
            align.seed)}
    index_facts = contract.write_index(folder, index)
    contract.write_config(folder, config.model_dump(mode="json"))
    return {"kind": "embeddings", **meta, "dim": dim, "rows": len(rows.ids), "index": index_facts,
            "model_source": embedded.source, "model_identity": planned.model, "mode": planned.mode,
            "items_embedded": len(rows.train),
            "items_new": rows.new, "items_changed": rows.changed, "items_removed": rows.removed,
            "incremental_base_run_id": None if base is None else base.run_id, "text_truncated": embedded.truncated,
            "processes": accelerator.num_processes, "mixed_precision": accelerator.mixed_precision, **facts}
