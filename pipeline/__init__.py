"""seqrec-pipeline: orchestration (CLI, config, artifact store, data ingestion, metrics, progress)."""
