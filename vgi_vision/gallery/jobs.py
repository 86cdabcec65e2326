"""Which job each run belongs to, kept in the gallery's summary for the Run facet.

A ``vgi-vision classify`` command commits one run per sub-batch, all named with one job id
(:mod:`vgi_vision.worker.jobs`), recorded with each run in the store's ``runs`` table. The
summary's ``run_jobs`` table maps run id to job id for the runs that have one; it grows with
the runs committed since the last look, read by run id, as the rest of the summary does. The
Run facet shows a job as one entry, a run without a job as its own.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable

import duckdb
import pyarrow as pa

from vgi_vision.store import StoreReader

#: A job id as the worker accepts it; any other stored value is left out (it is data, and a
#: facet link must name something the grid's filter accepts).
JOB_ID = re.compile(r"^[0-9a-f]{32}$")


async def record_jobs(con: duckdb.DuckDBPyConnection, store: StoreReader,
                      run_ids: Iterable[str]) -> None:
    """Add the jobs of ``run_ids`` (runs new to the summary) to ``run_jobs``."""
    jobs = await store.jobs_of(sorted(run_ids))
    kept = {run: job for run, job in jobs.items() if isinstance(job, str) and JOB_ID.fullmatch(job)}
    await asyncio.to_thread(_insert, con, kept)


def _insert(con: duckdb.DuckDBPyConnection, jobs: dict[str, str]) -> None:
    cursor = con.cursor()
    cursor.execute("CREATE TABLE IF NOT EXISTS run_jobs (run_id VARCHAR, job_id VARCHAR)")
    if not jobs:
        return
    cursor.register("jobs", pa.table({"run_id": list(jobs), "job_id": list(jobs.values())}))
    cursor.execute("INSERT INTO run_jobs SELECT run_id, job_id FROM jobs WHERE run_id NOT IN "
                   "(SELECT run_id FROM run_jobs)")
    cursor.unregister("jobs")
