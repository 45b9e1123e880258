"""`seqrec-pipeline align`: the latest dataset run -> item embeddings run (Parquet + FAISS + checkpoint).

Runs unchanged on CPU, one GPU or under `accelerate launch`: every process trains or embeds its share,
the vectors are gathered once, and only the main process writes, through `publish_run`. A killed run
leaves its partial folder; the next run with the same config picks up its checkpoints. `--incremental`
embeds only items that are new or whose text changed since the latest published run.
`align.method: recformer` (`recformer_method`) pretrains its encoder instead (checkpointed and resumed the
same way), then embeds the items like the others.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
import pyarrow.parquet as pq
from accelerate import Accelerator
from accelerate.utils import set_seed

from pipeline import embeddings as contract
from pipeline.config import AlignConfig, PipelineConfig, fingerprint, stage_run_id
from pipeline.errors import BadInput
from pipeline.prepare import ITEMS_FILE
from pipeline.store import RunResult, publish_run, read_manifest, workspace_output, write_json_atomic
from stages.accelerator import stage_accelerator
from stages.align import export, recformer_method, said_method
from stages.align.dist import say
from stages.align.evidence import attribute_sets, neighbour_rate
from stages.align.lm import Loaded, load_causal_lm, load_encoder, use_attention
from stages.align.projector import SAIDProjector
from stages.align.text_encoder import encode
from stages.align.tokens import Tokens, render, text_sha256, tokenize

TOKENS_CACHE = "tokens.npz"
CHECKPOINTS = "checkpoints"


@dataclass
class Items:
    """The dataset's items as alignment sees them, and what an incremental run must (re)train."""

    ids: list[str]
    texts: list[str]
    sha: list[str]
    attribute: list[str | None] | None
    train: list[int]  # dataset rows to embed now
    base_rows: list[int | None]  # for each row in `train`: its row in the base run, or None (new)
    base: contract.Embeddings | None


def _model_name(config: PipelineConfig) -> str:
    align = config.align
    if align.method == "recformer":
        return recformer_method.model_name(config.recformer)
    return align.lm if align.method == "said" or align.encoder == "lm" else align.encoder


def _pooling(config: PipelineConfig) -> str:
    method = config.align.method
    return {"said": config.align.said.pooling, "text": "mean_tokens", "recformer": config.recformer.pooling}[method]


def _items(config: PipelineConfig, dataset_dir: Path, base_dir: Path | None) -> Items:
    table = pq.read_table(dataset_dir / ITEMS_FILE)
    attribute = config.align.evidence.attribute
    if attribute is not None and attribute not in table.column_names:
        raise BadInput(f"align.evidence.attribute: {dataset_dir / ITEMS_FILE} has no column {attribute!r} "
                       f"(it has: {', '.join(table.column_names)})")
    ids = table.column("item_id").to_pylist()
    texts = render(table, config.align.template)
    sha = text_sha256(texts)
    values = table.column(attribute).to_pylist() if attribute else None
    if base_dir is None:
        return Items(ids, texts, sha, values, list(range(len(ids))), [None] * len(ids), None)
    base = contract.read_embeddings(base_dir)
    where = {item: row for row, item in enumerate(base.item_ids)}
    train = [i for i, item in enumerate(ids) if item not in where or base.text_sha256[where[item]] != sha[i]]
    return Items(ids, texts, sha, values, train, [where.get(ids[i]) for i in train], base)


def _check_base(config: PipelineConfig, base: contract.Embeddings, dim: int | None) -> None:
    """The base run was made by the same method and model (and dimension, when known yet)."""
    meta = base.metadata
    wanted = {"method": config.align.method, "model": _model_name(config), "dim": None if dim is None else str(dim)}
    for key, value in wanted.items():
        if value is None:
            continue
        if meta.get(key) != value:
            raise BadInput(f"--incremental: the latest embeddings run has {key} {meta.get(key)!r}, this config "
                           f"gives {value!r}; run without --incremental")


def _merge(items: Items, vectors: np.ndarray) -> tuple[list[str], np.ndarray, list[str], list[int], bool]:
    """Rows of the new run: base rows untouched (changed ones replaced in place), new items appended.

    Returns ids, vectors, text hashes, each trained row's place, and whether any base row changed.
    """
    if items.base is None:
        return items.ids, vectors, items.sha, list(range(len(items.ids))), False
    ids, matrix, sha = list(items.base.item_ids), items.base.vectors.copy(), list(items.base.text_sha256)
    appended, placed = [], []
    for k, (row, base_row) in enumerate(zip(items.train, items.base_rows)):
        if base_row is None:
            placed.append(len(ids))
            appended.append(k)
            ids.append(items.ids[row])
            sha.append(items.sha[row])
        else:
            placed.append(base_row)
            sha[base_row] = items.sha[row]
    changed = [k for k, base_row in enumerate(items.base_rows) if base_row is not None]
    for k in changed:
        matrix[items.base_rows[k]] = vectors[k]
    matrix = np.concatenate([matrix, vectors[appended]]).astype(np.float32)
    return ids, matrix, sha, placed, bool(changed)


def _index(config: AlignConfig, folder: Path, base_dir: Path | None, matrix: np.ndarray, new_from: int,
           changed: bool) -> dict[str, object]:
    """Write the index: the base index plus the appended rows, or (first run / changed rows) all rows."""
    spec = export.IndexSpec(config.export.index, config.export.hnsw_m, config.export.ivf_lists, config.export.pq_m)
    if base_dir is None:
        return export.write_index(folder, export.new_index(spec, export.l2_normalise(matrix)), matrix)
    index = faiss.read_index(str(base_dir / contract.INDEX_FILE))
    if changed:  # rows replaced in place: refill the (already trained) index in row order
        index.reset()
        return export.write_index(folder, index, matrix)
    return export.write_index(folder, index, matrix[new_from:])


SAID_ONLY = {"said", "attention"}  # align settings no other method reads


def _load(accelerator: Accelerator, align: AlignConfig) -> tuple[Loaded, int]:
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


def _embed(accelerator: Accelerator, align: AlignConfig, loaded: Loaded, tokens: Tokens, items: Items,
           base_dir: Path | None, folder: Path) -> tuple[np.ndarray, SAIDProjector | None, dict[str, object]]:
    """Vectors of the items to embed (row i = items.train[i]), the trained projector (SAID), and facts."""
    pad_id = loaded.tokenizer.pad_token_id
    if align.method == "text":
        return encode(accelerator, loaded.model, tokens, align.batch_size, pad_id), None, {"evidence": {}}
    projector = said_method.projector_for(align, loaded.model, tokens, base_dir, items.base_rows)
    trained = said_method.train_and_embed(accelerator, align, loaded.model, tokens, projector, pad_id,
                                          folder / CHECKPOINTS)
    losses = trained.position.losses
    training = {"steps": trained.position.step, "resumed_from_step": trained.position.resumed_from,
                "first_loss": _mean(losses[:5]), "last_loss": _mean(losses[-5:])}
    return trained.vectors, trained.projector, {"training": training, "evidence": {"prefix_loss": trained.evidence}}


def run(config: PipelineConfig, force: bool = False, incremental: bool = False) -> RunResult | None:
    """Align the latest dataset's items and publish the embeddings; None on non-main processes."""
    align = config.align
    accelerator = stage_accelerator(align.mixed_precision)
    dataset_dir = workspace_output(config, "datasets").require_latest("no dataset yet: run `prepare` first")
    dataset_run = read_manifest(dataset_dir)["run_id"]
    output = workspace_output(config, "embeddings")
    base_dir = output.latest() if incremental else None
    if incremental and base_dir is None:
        raise BadInput(f"--incremental: no published embeddings under {output.path} to add to")
    base_run = read_manifest(base_dir)["run_id"] if base_dir else None
    pretrain_dirs = recformer_method.pretraining_datasets(config) if align.method == "recformer" else []
    # A method's run id hashes the settings it reads: SAID's section does not touch the other methods' vectors.
    config_hash = fingerprint(align.model_dump(mode="json", exclude=None if align.method == "said" else SAID_ONLY))
    inputs = [dataset_run, base_run]
    if align.method == "recformer":  # its own section (fine-tuning aside) and every pretraining dataset feed the run
        config_hash = fingerprint(config_hash, config.recformer.model_dump(mode="json", exclude={"finetune"}))
        inputs += [recformer_method.model_identity(config.recformer), *recformer_method.dataset_run_ids(pretrain_dirs)]
    run_id = stage_run_id("align", config_hash, *inputs)
    if output.is_published(run_id) and not force and not accelerator.is_main_process:
        return None

    def build(folder: Path) -> dict[str, object]:
        accelerator.wait_for_everyone()  # the main process has prepared `folder` (cleared if --force)
        set_seed(align.seed)
        items = _items(config, dataset_dir, base_dir)
        say(accelerator)("aligning", f"{align.method}: {len(items.train):,} of {len(items.ids):,} items to embed"
                         + (f" (incremental over {base_run})" if base_dir else ""))
        if align.method == "recformer":
            if items.base is not None:
                _check_base(config, items.base, None)
            embedded = recformer_method.embed(accelerator, config.recformer, [dataset_dir, *pretrain_dirs],
                                              items.train, base_dir, folder / CHECKPOINTS, align.checkpoint_every)
            vectors, projector, facts = embedded.vectors, None, embedded.facts
            source, truncated = _model_name(config), None
            facts["pretrain_datasets"] = dict(zip(config.recformer.pretrain.datasets,
                                                  recformer_method.dataset_run_ids(pretrain_dirs)))
        else:
            loaded, dim = _load(accelerator, align)
            if items.base is not None:
                _check_base(config, items.base, dim)
            with accelerator.main_process_first():  # the main process tokenizes and caches; the others read it
                tokens = tokenize([items.texts[i] for i in items.train], loaded.tokenizer, align.max_text_tokens,
                                  special_tokens=align.method == "text", cache=folder / TOKENS_CACHE)
            vectors, projector, facts = _embed(accelerator, align, loaded, tokens, items, base_dir, folder)
            source, truncated = loaded.source, tokens.truncated
        accelerator.wait_for_everyone()
        if not accelerator.is_main_process:
            return facts
        ids, matrix, sha, placed, changed = _merge(items, vectors)
        if projector is not None:
            said_method.save_projector(folder / said_method.PROJECTOR_FILE, projector, base_dir, placed)
        if align.method == "recformer":
            recformer_method.save(embedded, folder)
        meta = {"method": align.method, "model": _model_name(config), "normalisation": align.export.normalise,
                "config_hash": config_hash, "dataset_run_id": dataset_run, "pooling": _pooling(config)}
        export.write_embeddings(folder, ids, export.stored(matrix, align.export.normalise), sha, meta)
        index = _index(align, folder, base_dir, matrix, len(items.base.item_ids) if items.base else 0, changed)
        if items.attribute is not None:
            values = attribute_sets(_values_by_row(items, ids), align.evidence.separator)
            facts["evidence"]["neighbours"] = {"attribute": align.evidence.attribute, **neighbour_rate(
                matrix, values, align.evidence.neighbour_queries, align.seed)}
        write_json_atomic(folder / "config.json", config.model_dump(mode="json"))
        # Removed last: until here a crash resumes from these; the published run keeps only the projector.
        (folder / TOKENS_CACHE).unlink(missing_ok=True)
        shutil.rmtree(folder / CHECKPOINTS, ignore_errors=True)
        return {"kind": "embeddings", **meta, "dim": int(matrix.shape[1]), "rows": len(ids), "index": index,
                "model_source": source, "items_embedded": len(items.train),
                "incremental_base_run_id": base_run, "text_truncated": truncated,
                "processes": accelerator.num_processes, "mixed_precision": accelerator.mixed_precision, **facts}

    if not accelerator.is_main_process:
        build(output.partial_dir(run_id))
        accelerator.wait_for_everyone()
        return None
    result = publish_run(output, run_id, build, force=force, keep_partial=True,
                         lock_wait_s=config.workspace.lock_wait_s, stale_lock_s=config.workspace.stale_lock_s)
    if accelerator.num_processes > 1 and not result.reused:
        accelerator.wait_for_everyone()
    return result


def _mean(values: list[float]) -> float | None:
    return round(float(np.mean(values)), 4) if values else None


def _values_by_row(items: Items, ids: list[str]) -> list[str | None]:
    """The attribute value of each exported row (rows of items no longer in the dataset have none)."""
    by_id = dict(zip(items.ids, items.attribute or []))
    return [by_id.get(item) for item in ids]
