"""`seqrec-pipeline align`: a dataset run's items -> item embeddings run (Parquet + FAISS + checkpoint).

Stage one is keyed by the catalog: a run hashes its settings and its catalog (item ids and texts), not the
interactions. By default a run builds on the newest published run made with the same settings: over the
same catalog that run is reused as it is (no model loaded); over a changed catalog only new items and
items whose text changed are embedded, every other row is kept bit for bit and removed items are dropped.
With no such run, or with `full`, every item is embedded.

Runs unchanged on CPU, one GPU or under `accelerate launch`: every process trains or embeds its share,
the vectors are gathered once, and only the main process writes, through `publish_run`. A killed run
leaves its partial folder; the next run with the same config picks up its checkpoints.
`align.method: recformer` (`recformer_method`) pretrains its encoder instead (checkpointed and resumed the
same way), then embeds the items like the others; over a base run it embeds new items with the base's
encoder and no pretraining.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from accelerate import Accelerator
from accelerate.utils import set_seed

from pipeline import embeddings as contract
from pipeline import events
from pipeline.artifact_files import read_faiss
from pipeline.config import AlignConfig, PipelineConfig, fingerprint, stage_run_id
from pipeline.errors import BadInput
from pipeline.history import write_history
from pipeline.schema.renamed import hashed_names
from pipeline.store import RunResult, publish_run, read_manifest, reuse_run, workspace_output, write_json_atomic
from pipeline.workspace import newest
from stages.accelerator import stage_accelerator
from stages.align import export, model_id, recformer_method, said_method
from stages.align.catalog import Catalog, RowPlan, plan_rows, read_catalog
from stages.align.dist import say
from stages.align.evidence import attribute_sets, neighbour_rate
from stages.align.lm import Loaded, load_causal_lm, load_encoder, use_attention
from stages.align.text_encoder import encode
from stages.align.tokens import tokenize

TOKENS_CACHE = "tokens.npz"
CHECKPOINTS = "checkpoints"
SAID_ONLY = {"said", "attention"}  # align settings no other method reads
MODEL_PLACES = {"lm", "encoder", "model_cache", "offline"}  # where the model is found: its files' sha256 count instead


@dataclass(frozen=True)
class AlignPlan:
    """What `align` will do with a dataset run, and why (`seqrec-pipeline status` prints the reason)."""

    mode: Literal["reuse", "incremental", "full"]
    reason: str
    run_id: str
    catalog: Catalog
    rows: RowPlan
    base: contract.Embeddings | None
    config_hash: str
    dataset_run_id: str
    pretrain_dirs: list[Path] = field(default_factory=list)
    model: dict[str, Any] | None = None  # SAID / text: the frozen model's identity (model_id.identify)


def _model_name(config: PipelineConfig) -> str:
    align = config.align
    if align.method == "recformer":
        return recformer_method.model_name(config.recformer)
    return align.lm if align.method == "said" or align.encoder == "lm" else align.encoder


def _pooling(config: PipelineConfig) -> str:
    method = config.align.method
    return {"said": config.align.said.pooling, "text": "mean_tokens", "recformer": config.recformer.pooling}[method]


def model_identity(config: PipelineConfig) -> dict[str, Any] | None:
    """The frozen model SAID or the text encoder reads (how to look it up, its files' sha256); None for recformer,
    whose starting checkpoint `recformer_method.model_identity` pins."""
    align = config.align
    if align.method == "recformer":
        return None
    own = align.method == "said" or align.encoder == "lm"
    return model_id.identify(align.lm if own else align.encoder, "align.lm" if own else "align.encoder",
                             align.model_cache, align.offline)


def _config_hash(config: PipelineConfig, model: dict[str, Any] | None) -> str:
    """The settings a method reads: SAID's section does not touch the other methods' vectors. The model counts
    by its files' sha256, not its name: new weights under the same name are a new run, never an extension of
    one made with the old weights; where the model is read from and cached does not count."""
    align = config.align
    if model is None:  # recformer: its settings as they are
        settings = fingerprint(align.model_dump(mode="json", exclude=SAID_ONLY))
    else:
        exclude = MODEL_PLACES | (set() if align.method == "said" else SAID_ONLY)
        settings = fingerprint(align.model_dump(mode="json", exclude=exclude), model["sha256"])
    if align.method == "recformer":  # its own section (fine-tuning aside) feeds the run
        recformer = config.recformer.model_dump(mode="json", exclude={"finetune"})
        settings = fingerprint(settings, hashed_names("recformer", recformer))  # under the keys' old names
    return settings


def _full_run_inputs(config: PipelineConfig, dataset_run: str, pretrain_dirs: list[Path]) -> list[object]:
    """What a full run reads besides the catalog: Recformer pretrains on the train split and starts from a model."""
    if config.align.method != "recformer":
        return []
    return [dataset_run, recformer_method.model_identity(config.recformer),
            *recformer_method.dataset_run_ids(pretrain_dirs)]


def plan(config: PipelineConfig, dataset_dir: Path, full: bool = False) -> AlignPlan:
    """Reuse, extend or redo: decided from the catalog and the published runs made with the same settings."""
    dataset_run = read_manifest(dataset_dir)["run_id"]
    catalog = read_catalog(dataset_dir, config.align.template, config.align.evidence.attribute)
    model = model_identity(config)
    config_hash = _config_hash(config, model)
    pretrain_dirs = recformer_method.pretraining_datasets(config) if config.align.method == "recformer" else []
    output = workspace_output(config, "embeddings")
    found = None if full else newest(output, lambda run: run.manifest.get("kind") == "embeddings"
                                      and run.manifest.get("config_hash") == config_hash)
    if found is not None and found.manifest.get("catalog_sha256") == catalog.fingerprint:
        return AlignPlan("reuse", f"catalog unchanged since run {found.run_id}: reused, nothing to embed",
                         found.run_id, catalog, plan_rows(catalog, None), None, config_hash, dataset_run, pretrain_dirs,
                         model)
    base = None if found is None else contract.read_embeddings(found.run_dir)
    rows = plan_rows(catalog, base)
    inputs = _full_run_inputs(config, dataset_run, pretrain_dirs) if base is None else [base.run_id]
    run_id = stage_run_id("align", config_hash, catalog.fingerprint, *inputs)
    if base is not None:
        reason = (f"{rows.new:,} new items, {rows.changed:,} changed, {rows.removed:,} removed since run "
                  f"{base.run_id}: incremental")
        return AlignPlan("incremental", reason, run_id, catalog, rows, base, config_hash, dataset_run, pretrain_dirs,
                         model)
    latest = output.latest()
    if full:
        reason = f"--full: all {len(catalog.ids):,} items"
    elif latest is not None:
        made = read_manifest(latest)
        reason = (f"latest run {made.get('run_id')} was made with other settings or model files (method "
                  f"{made.get('method')}, model {made.get('model')}): full alignment of {len(catalog.ids):,} items")
    else:
        reason = f"no embeddings run yet: full alignment of {len(catalog.ids):,} items"
    return AlignPlan("full", reason, run_id, catalog, rows, None, config_hash, dataset_run, pretrain_dirs, model)


def _check_dim(base: contract.Embeddings | None, dim: int) -> None:
    if base is not None and base.dim != dim:
        raise BadInput(f"{base.run_dir}: the base run's vectors have dim {base.dim}, the configured model gives "
                       f"{dim} (its weights changed?); run align with --full")


def _index(config: AlignConfig, folder: Path, base_dir: Path | None, matrix: np.ndarray,
           rows: RowPlan) -> dict[str, object]:
    """The base index extended by the appended rows, or (first run, changed or removed rows) all rows."""
    spec = export.IndexSpec(config.export.index, config.export.hnsw_m, config.export.ivf_lists, config.export.pq_m)
    if base_dir is None:
        return export.write_index(folder, export.new_index(spec, export.l2_normalise(matrix)), matrix)
    index = read_faiss(base_dir / contract.INDEX_FILE)
    if rows.extends_base(int(index.ntotal)):
        return export.write_index(folder, index, matrix[index.ntotal:])
    index.reset()  # rows replaced or removed: refill the (already trained) index in row order
    return export.write_index(folder, index, matrix)


def load_model(accelerator: Accelerator, align: AlignConfig) -> tuple[Loaded, int]:
    """The frozen model the method needs, and the dimension of the vectors it will give."""
    with accelerator.main_process_first():  # one process converts a GGUF model; the others read the result
        if align.method == "said":
            loaded = load_causal_lm(align.lm, "align.lm", align.model_cache, align.offline, align.lm_dtype)
            use_attention(loaded.model, align.attention, accelerator.device)
            return loaded, said_method.output_dim(align, loaded.model.config.hidden_size)
        own = align.encoder == "lm"
        loaded = load_encoder(align.lm if own else align.encoder, "align.lm" if own else "align.encoder",
                              align.model_cache, align.offline, align.lm_dtype)
        return loaded, loaded.model.config.hidden_size


@dataclass
class Embedded:
    """The vectors of the rows embedded now (row k = plan.rows.train[k]) and how to save the method's files."""

    vectors: np.ndarray
    facts: dict[str, Any]
    source: str | None
    truncated: int | None
    save: Any  # (folder) -> None: the method's files (projector, encoder) in the run's row order


def _embed_with_lm(accelerator: Accelerator, config: PipelineConfig, planned: AlignPlan, folder: Path) -> Embedded:
    """SAID or the text encoder over the rows to embed now."""
    align, rows, base = config.align, planned.rows, planned.base
    base_dir = None if base is None else base.run_dir
    loaded, dim = load_model(accelerator, align)
    _check_dim(base, dim)
    with accelerator.main_process_first():  # the main process tokenizes and caches; the others read it
        tokens = tokenize([planned.catalog.texts[i] for i in rows.train], loaded.tokenizer, align.max_text_tokens,
                          special_tokens=align.method == "text", cache=folder / TOKENS_CACHE)
    pad_id = loaded.tokenizer.pad_token_id
    if align.method == "text":
        vectors = encode(accelerator, loaded.model, tokens, align.batch_size, pad_id)
        return Embedded(vectors, {"evidence": {}}, loaded.source, tokens.truncated, lambda _folder: None)
    projector = said_method.projector_for(align, loaded.model, tokens, base_dir, rows.base_rows)
    trained = said_method.train_and_embed(accelerator, align, loaded.model, tokens, projector, pad_id,
                                          folder / CHECKPOINTS)
    losses = trained.position.losses
    training = {"steps": trained.position.step, "resumed_from_step": trained.position.resumed_from,
                "first_loss": _mean(losses[:5]), "last_loss": _mean(losses[-5:])}
    facts = {"training": training, "evidence": {"prefix_loss": trained.evidence}}

    def save(out: Path) -> None:
        said_method.save_projector(out / said_method.PROJECTOR_FILE, trained.projector, base_dir, rows)
        write_history(out, trained.position.history)

    return Embedded(trained.vectors, facts, loaded.source, tokens.truncated, save)


def _embed_recformer(accelerator: Accelerator, config: PipelineConfig, planned: AlignPlan, dataset_dir: Path,
                     folder: Path) -> Embedded:
    base_dir = None if planned.base is None else planned.base.run_dir
    embedded = recformer_method.embed(accelerator, config.recformer, [dataset_dir, *planned.pretrain_dirs],
                                      planned.rows.train, base_dir, folder / CHECKPOINTS, config.align.checkpoint_every)
    _check_dim(planned.base, embedded.vectors.shape[1])
    facts = {**embedded.facts, "pretrain_datasets": dict(zip(config.recformer.pretrain.datasets,
                                                              recformer_method.dataset_run_ids(planned.pretrain_dirs)))}
    return Embedded(embedded.vectors, facts, _model_name(config), None,
                    lambda out: recformer_method.save(embedded, out))


def _carry_over(config: PipelineConfig, planned: AlignPlan) -> Embedded:
    """Nothing to embed (only removals, or a base without a catalog fingerprint): no model is loaded."""
    base = planned.base
    assert base is not None  # a full run always has rows to embed

    def save(folder: Path) -> None:
        if config.align.method == "said":
            said_method.save_projector(folder / said_method.PROJECTOR_FILE, None, base.run_dir, planned.rows)
        elif config.align.method == "recformer":
            shutil.copytree(base.run_dir / recformer_method.ENCODER_DIR, folder / recformer_method.ENCODER_DIR)

    return Embedded(np.zeros((0, base.dim), np.float32), {"evidence": {}}, base.manifest.get("model_source"),
                    None, save)


@events.in_stage("align")
def run(config: PipelineConfig, force: bool = False, full: bool = False,
        dataset_dir: Path | None = None) -> RunResult | None:
    """Align the items of `dataset_dir` (default: the latest dataset run) and publish the embeddings.

    `force` re-runs the planned run (over an unchanged catalog: a full run); None on non-main processes.
    """
    align = config.align
    accelerator = stage_accelerator(align.mixed_precision)
    if dataset_dir is None:
        dataset_dir = workspace_output(config, "datasets").require_latest("no dataset yet: run `prepare` first")
    output = workspace_output(config, "embeddings")
    planned = plan(config, dataset_dir, full)
    if planned.mode == "reuse" and force:
        planned = plan(config, dataset_dir, full=True)
    events.making(planned.run_id)
    say(accelerator)("align_plan", f"align: {planned.reason}", mode=planned.mode, run_id=planned.run_id)
    if planned.mode == "reuse":
        return reuse_run(output, planned.run_id, config.workspace.lock_wait_s, config.workspace.stale_lock_s) \
            if accelerator.is_main_process else None
    if output.is_published(planned.run_id) and not force and not accelerator.is_main_process:
        return None

    def build(folder: Path) -> dict[str, object]:
        accelerator.wait_for_everyone()  # the main process has prepared `folder` (cleared if --force)
        set_seed(align.seed)
        rows, base = planned.rows, planned.base
        work = ""
        if align.method == "said" and rows.train:
            steps = -(-len(rows.train) // align.batch_size) * align.said.epochs
            work = f", {align.said.epochs} epochs = about {min(steps, align.said.max_steps or steps):,} steps"
        say(accelerator)("aligning", f"{align.method}: {len(rows.train):,} of {len(planned.catalog.ids):,} items "
                         f"to embed{work}" + (f" (incremental over {base.run_id})" if base else "")
                         + ("; `run --dry-run` prices it" if work else ""))
        if not rows.train:
            embedded = _carry_over(config, planned)
        elif align.method == "recformer":
            embedded = _embed_recformer(accelerator, config, planned, dataset_dir, folder)
        else:
            embedded = _embed_with_lm(accelerator, config, planned, folder)
        accelerator.wait_for_everyone()
        if not accelerator.is_main_process:
            return embedded.facts
        return _export(config, planned, embedded, folder, accelerator)

    if not accelerator.is_main_process:
        build(output.partial_dir(planned.run_id))
        accelerator.wait_for_everyone()
        return None
    # The tokens and checkpoints go only once the run is published: until then a crash resumes from them.
    result = publish_run(output, planned.run_id, build, force=force, keep_partial=True,
                         scratch=(CHECKPOINTS, TOKENS_CACHE),
                         lock_wait_s=config.workspace.lock_wait_s, stale_lock_s=config.workspace.stale_lock_s)
    if accelerator.num_processes > 1 and not result.reused:
        accelerator.wait_for_everyone()
    return result


def _export(config: PipelineConfig, planned: AlignPlan, embedded: Embedded, folder: Path,
            accelerator: Accelerator) -> dict[str, object]:
    """Write the run's files (main process) and return its manifest facts."""
    align, rows, base = config.align, planned.rows, planned.base
    base_dir = None if base is None else base.run_dir
    # Base rows are copied as stored (bit for bit); only the rows embedded now are normalised.
    matrix = rows.assemble(None if base is None else base.vectors,
                           export.stored(embedded.vectors, align.export.normalise))
    embedded.save(folder)
    meta = {"method": align.method, "model": _model_name(config), "normalisation": align.export.normalise,
            "config_hash": planned.config_hash, "dataset_run_id": planned.dataset_run_id,
            "catalog_sha256": planned.catalog.fingerprint, "pooling": _pooling(config)}
    export.write_embeddings(folder, rows.ids, matrix, rows.sha, meta)
    index = _index(align, folder, base_dir, matrix, rows)
    facts = embedded.facts
    if planned.catalog.attribute is not None:
        by_id = dict(zip(planned.catalog.ids, planned.catalog.attribute))
        values = attribute_sets([by_id.get(item) for item in rows.ids], align.evidence.separator)
        facts["evidence"]["neighbours"] = {"attribute": align.evidence.attribute, **neighbour_rate(
            matrix, values, align.evidence.neighbour_queries, align.seed)}
    write_json_atomic(folder / "config.json", config.model_dump(mode="json"))
    return {"kind": "embeddings", **meta, "dim": int(matrix.shape[1]), "rows": len(rows.ids), "index": index,
            "model_source": embedded.source, "model_identity": planned.model, "mode": planned.mode,
            "items_embedded": len(rows.train),
            "items_new": rows.new, "items_changed": rows.changed, "items_removed": rows.removed,
            "incremental_base_run_id": None if base is None else base.run_id, "text_truncated": embedded.truncated,
            "processes": accelerator.num_processes, "mixed_precision": accelerator.mixed_precision, **facts}


def _mean(values: list[float]) -> float | None:
    return round(float(np.mean(values)), 4) if values else None
