"""The Dask engine of the batch run: the same :func:`serving.batch.segment_frame` per partition.

Events are read with ``dask.dataframe`` (Parquet files directly; CSV input arrives already
validated as a pandas frame), shuffled on ``fan_id`` so that each partition holds whole fans
(Dask hashes the column to pick the partition), and :func:`segment_frame` is mapped over the
partitions on a ``distributed`` cluster: the address given by ``--scheduler``, or a
``LocalCluster`` of one single-threaded worker process per core. LightGBM predicts with one
thread per task (several tasks share the cores). The scored partitions come back to the client
in partition order and are written by the batch run's Parquet writer, so the output is the same
rows and values as the local engine's (up to row order: both are sorted by fan_id within a
partition).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Generator, Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import pandas as pd

from features.contract import DEFAULT_TZ, localize
from features.fans import OPTIONAL_COLUMNS, literal_pattern

if TYPE_CHECKING:
    from pathlib import Path

    import dask.dataframe as dd
    from distributed import Client

    from serving.batch import EventInput
    from training.tiers import TierModel

PARTITION_EVENTS = 2_000_000
"""Default events per Dask partition (each partition is featurised in a worker's memory)."""
_COLUMNS = ("fan_id", "event_time", "event_type", *OPTIONAL_COLUMNS)


def default_partitions(events: int) -> int:
    """Partitions for ``events`` events: one per :data:`PARTITION_EVENTS`, at least the cores."""
    return max(os.cpu_count() or 1, math.ceil(events / PARTITION_EVENTS))


@contextmanager
def dask_client(scheduler: Any = None) -> Iterator[Client]:
    """A ``distributed.Client``: ``scheduler`` itself when it is a client, a connection to
    the scheduler address when it is a string, else a ``LocalCluster`` closed on exit."""
    from distributed import Client, LocalCluster

    if isinstance(scheduler, Client):
        yield scheduler
        return
    if scheduler:
        with Client(scheduler) as client:
            yield client
        return
    workers = os.cpu_count() or 1
    # the in-process scheduler logs every shuffle's start and end as a WARNING
    logging.getLogger("distributed.shuffle._scheduler_plugin").setLevel(logging.ERROR)
    with (
        LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


def _normalise(part: pd.DataFrame, tz: str) -> pd.DataFrame:
    """Contract dtypes for one partition read from files (text times, text numbers)."""
    part = part.copy()
    if not pd.api.types.is_datetime64_any_dtype(part["event_time"].dtype):
        part["event_time"] = localize(part["event_time"], tz)
    for col in OPTIONAL_COLUMNS:
        if col in part.columns and not pd.api.types.is_float_dtype(part[col].dtype):
            part[col] = pd.to_numeric(part[col], errors="coerce").astype("float64")
    part["fan_id"] = part["fan_id"].astype("str")
    part["event_type"] = part["event_type"].astype("str")
    return part


def _segment_partition(
    part: pd.DataFrame, model: TierModel, cutoff: pd.Timestamp, tz: str
) -> pd.DataFrame:
    from serving.batch import segment_frame

    return segment_frame(model, _normalise(part, tz), cutoff, tz=tz, num_threads=1)


def read_parquet_events(paths: Iterable[Path], columns: list[str]) -> dd.DataFrame:
    """A Dask frame of exactly these Parquet files (fsspec would expand glob characters in
    their names: ``ev[1].parquet`` would read ``ev1.parquet``)."""
    import dask.dataframe as dd

    return dd.read_parquet([literal_pattern(p) for p in paths], columns=columns)


def dask_batches(
    inp: EventInput,
    model: TierModel,
    cutoff: pd.Timestamp,
    partitions: int,
    *,
    tz: str = DEFAULT_TZ,
    scheduler: Any = None,
    frame: pd.DataFrame | None = None,
) -> Generator[tuple[int, pd.DataFrame, None]]:
    """(partition, scored fans, None) for each of ``partitions`` fan-hash partitions, in order.

    After each partition's frame an empty frame marks the partition done (progress). The
    third item (window spend, see :mod:`serving.batch`) is None: the summary queries it.
    ``frame`` is the already validated event frame of a CSV input.
    """
    import dask.dataframe as dd
    import pyarrow.parquet as pq

    from serving.batch import empty_scores

    if frame is not None:
        cols = [c for c in _COLUMNS if c in frame.columns]
        ddf = dd.from_pandas(frame[cols], npartitions=max(1, min(partitions, len(frame) or 1)))
    else:
        names: set[str] = set()
        for path in inp.paths:
            names.update(pq.read_schema(path).names)
        cols = [c for c in _COLUMNS if c in names]
        ddf = read_parquet_events(inp.paths, cols)
    ddf = ddf.shuffle(on="fan_id", npartitions=partitions)
    scored = ddf.map_partitions(_segment_partition, model, cutoff, tz, meta=empty_scores())
    with dask_client(scheduler) as client:
        futures = client.compute(scored.to_delayed())
        for i, fut in enumerate(futures):
            yield i, fut.result(), None
            fut.release()
            yield i, empty_scores(), None
