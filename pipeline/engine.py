"""Which engine `prepare` runs on (`data.engine`): `memory` (pyarrow + numpy, `pipeline.dataset`) or `duckdb`
(out of core, `pipeline.dataset_sql`); both give the same dataset, byte for byte.

`auto` keeps the memory engine, the faster one (16.6 s for 10M interactions here), while its peak fits
`data.memory_limit_gib`: it was measured at about 220 bytes per interaction (2.06 GiB for 10M rows,
benchmarks/results/prepare_bench.json), and the row count is estimated from the Parquet footers or from the
first MiB of a text file. Beyond that, and for formats whose reader cannot hand over its interactions as one
file or folder (`interactions_source`), it is DuckDB, or memory respectively.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.config import DataConfig
from pipeline.errors import BadInput
from pipeline.ingest import InteractionsSource
from pipeline.ingest.tabular import parquet_parts

MEMORY_ENGINE_BYTES_PER_ROW = 220
_SAMPLE_BYTES = 1 << 20


def out_of_core(reader: ModuleType) -> bool:
    """Whether DuckDB can read this format's interactions itself (recbole_atomic, table, canonical)."""
    return hasattr(reader, "interactions_source")


def choose(config: DataConfig, reader: ModuleType) -> str:
    """`memory` or `duckdb`, as `data.engine` says (see the module docstring for `auto`).

    Raises:
        BadInput: `duckdb` was asked for a format it cannot read.
    """
    if config.engine == "duckdb" and not out_of_core(reader):
        raise BadInput(f"data.engine: duckdb reads recbole_atomic, table and canonical data, not {config.format}; "
                       "set data.engine=memory (or auto)")
    if config.engine != "auto":
        return config.engine
    if not out_of_core(reader):
        return "memory"
    needed = estimated_rows(reader.interactions_source(config)) * MEMORY_ENGINE_BYTES_PER_ROW
    return "duckdb" if needed > config.memory_limit_gib * 2**30 else "memory"


def estimated_rows(source: InteractionsSource) -> int:
    """The interactions' row count: exact from Parquet footers; for a text file, its size over the mean length
    of the lines in its first MiB."""
    if source.delimiter is None:
        files = parquet_parts(source.path) if source.path.is_dir() else [source.path]
        try:
            return sum(pq.ParquetFile(path).metadata.num_rows for path in files)
        except (pa.ArrowInvalid, OSError) as exc:
            raise BadInput(f"{source.path}: not a readable Parquet file or folder ({' '.join(str(exc).split())})") from None
    with source.path.open("rb") as handle:
        sample = handle.read(_SAMPLE_BYTES)
    return int(source.path.stat().st_size / max(len(sample), 1) * max(sample.count(b"\n"), 1))


def scratch_folder(run_folder: Path) -> Path:
    """Where DuckDB keeps its database and spill files: inside the run's partial folder, so a killed job's
    leftovers go with it (`verify --repair`, the next run), and removed before the run is published."""
    return run_folder / ".duckdb"
