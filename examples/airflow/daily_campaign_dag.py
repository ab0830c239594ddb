"""An Airflow DAG that runs the daily campaign job: one task per date, `campaign run --date {{ ds }}`.

Copy this file into your Airflow DAG folder and set CAMPAIGN_HOME to the folder that holds the job file and the
platform's virtual environment. Airflow is not a dependency of the platform; this is an example.

- `catchup=True` runs every missed date in order, as `campaign backfill` would; `max_active_runs=1` keeps the
  dates in order, so each day's warm start finds the previous day's policy.
- Retries are safe: a date that finished with the same config and inputs is a no-op (`campaign run` prints the
  earlier MLflow run), and a date killed mid-way is run again whole.
- Exit code 2 is bad input (a missing export, a refused config): retrying will not fix it, so the task fails at
  once; exit code 1 is a bug, reported with its traceback in the task log.
"""

from __future__ import annotations

import datetime as dt
import os

from airflow import DAG
from airflow.exceptions import AirflowFailException
from airflow.operators.python import PythonOperator

CAMPAIGN_HOME = os.environ.get("CAMPAIGN_HOME", "/srv/offers")


def run_date(ds: str) -> None:
    import subprocess

    done = subprocess.run([f"{CAMPAIGN_HOME}/.venv/bin/campaign", "run", "jobs/daily.yaml", "--date", ds],
                          cwd=CAMPAIGN_HOME, check=False)
    if done.returncode == 2:
        raise AirflowFailException(f"campaign run --date {ds}: bad input (see the task log); not retried")
    done.check_returncode()


with DAG(
    dag_id="campaign_daily",
    start_date=dt.datetime(2026, 12, 1),
    schedule="0 6 * * *",
    catchup=True,
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": dt.timedelta(minutes=10)},
) as dag:
    PythonOperator(task_id="campaign_run", python_callable=run_date, op_kwargs={"ds": "{{ ds }}"})
