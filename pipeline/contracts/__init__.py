"""The artifact contracts: what each stage writes and what a reader may rely on, one module per artifact.

| module | run folder | files |
|---|---|---|
| `dataset` | `datasets/<name>/<run_id>/` (`prepare`) | `items.parquet`, `interactions.parquet` |
| `embeddings` | `embeddings/<name>/<run_id>/` (`align`) | `embeddings/part-*.parquet`, `index.faiss`, `config.json` |
| `downstream` | `downstream/<name>/<run_id>/` (`train-downstream`) | weights, `config.json`, `metrics.json`, `index.faiss` |
| `recommendations` | `recommendations/<name>/<run_id>/` (`recommend`) | `recommendations.parquet` |
| `history` | every training run folder | `history.jsonl` |

Each module holds its file names, its Arrow schema (where the files are Parquet), its writer and its reader.
Stages import these modules, never another stage, to read or write another stage's files; the file names
are spelled here and nowhere else (tests/test_contracts.py scans the source). Every run folder also holds
`manifest.json`, written by `pipeline.store.publish_run`.
"""
