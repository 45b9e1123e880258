"""`workspace` and `data`: where runs go, and the raw dataset `prepare` reads."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from pipeline.schema.base import NAME_PATTERN, Section


class WorkspaceConfig(Section):
    root: str = Field(description=(
        "where every run folder is written: <root>/<kind>/<name>/<run_id>; relative to the current folder unless set "
        "($SEQREC_WORKSPACE, --workspace, a config file)"))
    lock_wait_s: float = Field(ge=0, description=(
        "seconds to wait for a lock held by another live job before exiting with code 3"))
    stale_lock_s: float = Field(gt=0, description=(
        "a lock older than this (or whose process is gone, same host) is taken over"))


class ColumnsConfig(Section):
    user: str = Field(description="the user id column")
    item: str = Field(description="the item id column")
    timestamp: str | None = Field(description=(
        "epoch numbers, ISO-8601 text (2024-05-01T12:00:00Z; no offset = UTC) or a Parquet timestamp or date; null "
        "when there is no time column (row order is then time order)"))


class TextConfig(Section):
    fields: list[str] | None = Field(description=(
        "item attributes rendered into the text, in order; null = all the source has"))
    template: Literal["auto", "key_colon_value", "key_value", "values"] = Field(description=(
        "auto: the bare value where items have one attribute, else key_colon_value | key_colon_value (\"title: X\" "
        "lines) | key_value (Recformer: \"title X brand Y\") | values (\"X. Y\")"))


class DataConfig(Section):
    name: str = Field(pattern=NAME_PATTERN, description=(
        "dataset name: the output folder <root>/datasets/<name>"))
    format: Literal["recbole_atomic", "unisrec", "lcrec", "movielens", "table", "amazon", "canonical"] = Field(
        description=("recbole_atomic | unisrec | lcrec | movielens | table | amazon | canonical (items.parquet and "
                     "interactions.parquet, files or Spark's folders of parts: docs/canonical-dataset.md)"))
    path: str = Field(description=(
        "folder with the raw files; null = <workspace.root>/raw/<data.name> (`seqrec-pipeline fetch-default-data` "
        "fills artifacts/raw/ml-100k by default)"))
    stem: str | None = Field(description=(
        "file stem (<stem>.inter, <stem>.train.inter, <stem>.inter.json); null = the only one in `path`"))
    interactions_file: str = Field(description=(
        "table: interactions file (.csv / .tsv / .parquet, or a folder of Parquet parts as Spark and DuckDB write "
        "them, hive key=value/ folders included) in `path` amazon: the review file (.json or .json.gz, JSON lines)"))
    items_file: str = Field(description="table: items file in `path`; amazon: the metadata file (.json or .json.gz)")
    columns: ColumnsConfig = Field(description=(
        "table: column names in the interactions file (the items file's id column is `item`)"))
    text: TextConfig = Field(description="how each item's attributes become its text")
    dedup: Literal["none", "first"] = Field(description=(
        "first: keep each (user, item) pair's earliest interaction | none: keep repeats (the same user, item and "
        "timestamp twice is always dropped)"))
    kcore_users: int = Field(ge=0, description="iterative k-core: users need at least this many interactions (0 = off)")
    kcore_items: int = Field(ge=0, description="iterative k-core: items need at least this many interactions (0 = off)")
    max_history: int | None = Field(ge=3, description=(
        "keep only each user's most recent N interactions (null = all; at least 3)"))
    split: Literal["auto", "leave_one_out"] = Field(description=(
        "auto: the source's own split where it has one, else leave-one-out | leave_one_out"))
    drop_unknown_items: bool = Field(description=(
        "drop interactions naming items missing from the item table (else an error)"))
    drop_empty_text: bool = Field(description=(
        "drop items whose rendered text is empty, with their interactions (else an error)"))
    engine: Literal["auto", "memory", "duckdb"] = Field(description=(
        "memory: in memory, fastest | duckdb: out of core, within data.memory_limit_gib, spilling to disk "
        "(recbole_atomic, table, canonical) | auto: memory while its peak (about 220 bytes per interaction) fits "
        "data.memory_limit_gib, else duckdb; the same dataset either way"))
    memory_limit_gib: float = Field(ge=0.5, description=(
        "the memory prepare may use: DuckDB's bound (it spills beyond it) and auto's threshold"))
