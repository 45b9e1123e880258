"""An Airflow DAG for the scheduled refresh: `seqrec-pipeline run`, then `gc`.

BashOperator runs in a temporary folder of its own, so the config and the workspace are absolute paths
(`cwd` pins the working folder anyway). The pipeline's exit code 3 (another job holds the workspace)
marks the task skipped, not failed; a failed or killed run resumes from its checkpoints on retry.
Set SEQREC_CONFIG (and SEQREC_BIN, SEQREC_HOME) where the DAG file is parsed (the DAG processor) and run
(the workers), or edit the defaults below. Airflow 3 lists a new DAG after `airflow dags reserialize`.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow import DAG

try:  # Airflow 3 ships BashOperator in the standard provider
    from airflow.providers.standard.operators.bash import BashOperator
except ImportError:  # Airflow 2
    from airflow.operators.bash import BashOperator

CONFIG = os.environ.get("SEQREC_CONFIG", "/srv/recs/daily.yaml")
BIN = os.environ.get("SEQREC_BIN", "seqrec-pipeline")
HOME = os.environ.get("SEQREC_HOME", "/srv/recs")
LOCKED = 3  # the pipeline's exit code when another job holds an output

with DAG(
    dag_id="seqrec_refresh",
    schedule="15 2 * * *",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": timedelta(minutes=10)},
    tags=["recommendations"],
) as dag:
    refresh = BashOperator(
        task_id="run",
        bash_command=f"{BIN} run --config {CONFIG} --log-format json",
        cwd=HOME,
        skip_on_exit_code=LOCKED,
    )
    collect = BashOperator(
        task_id="gc",
        bash_command=f"{BIN} gc --config {CONFIG} --keep 7 --delete --log-format json",
        cwd=HOME,
    )
    refresh >> collect
