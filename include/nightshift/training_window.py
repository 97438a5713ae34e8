"""The training window read from its snapshots day by day: the training rows (sampled to training.max_rows when
there are more) and the holdout, each reaching pandas once.

training.split_train_holdout takes one frame of every labelled day and masks, copies and sorts it. At 1M rows a
night (a 14M-row window) that path held the window several times over (the concatenation, the masked copies, the
sorted copy; issue 15). Here each day's snapshot is read as Arrow and belongs to the training or the holdout part
by its date; its rows are kept to the day's bounds and put in (timestamp, entity key) order only when the file is
not already in it (snapshots are written in that order, so this is a check, not a sort); a training day is sampled
to its share of training.max_rows before anything else is read; the kept rows of a part become one pandas frame
at the end, the Arrow buffers released as each column converts.

For the same snapshots the frames equal split_train_holdout's, row for row and value for value, so an unsampled
window trains bit for bit as before (tests/unit/test_training_window.py). The holdout is sampled only when it holds
more than training.holdout_max_rows rows, the same way (each day its seeded share), so train and evaluate read the
same rows and the gate compares every model on them.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from include.nightshift.artifacts import ArtifactStore
from include.nightshift.snapshot import SnapshotRef, read_snapshot_rows, read_snapshot_table
from include.nightshift.spec import DatasetSpec
from include.nightshift.training import _utc, day_quotas, sample_positions

log = logging.getLogger(__name__)


@dataclass
class Window:
    """The training rows, the holdout rows, and the rows of each there were before sampling (None: not sampled)."""

    train: pd.DataFrame
    holdout: pd.DataFrame
    sampled_from: int | None = None
    holdout_sampled_from: int | None = None


def parts(refs: Sequence[SnapshotRef], spec: DatasetSpec,
          end_day: dt.date) -> tuple[list[SnapshotRef], list[SnapshotRef]]:
    """(training days, holdout days) among `refs`, each in day order: the holdout is the holdout_days days ending
    at `end_day`, the training window the window_days days before them; other days belong to neither."""
    t = spec.training
    holdout_first = end_day - dt.timedelta(days=t.holdout_days - 1)
    train_first = holdout_first - dt.timedelta(days=t.window_days)
    ordered = sorted(refs, key=lambda r: r.day)
    return ([r for r in ordered if train_first <= _day(r) < holdout_first],
            [r for r in ordered if holdout_first <= _day(r) <= end_day])


def read_window(store: ArtifactStore, refs: Sequence[SnapshotRef], spec: DatasetSpec, end_day: dt.date) -> Window:
    """The training and holdout frames of `refs` (the labelled snapshots of training.training_days), the training
    days sampled to training.max_rows when they hold more rows (each day its share: training.day_quotas)."""
    train_refs, holdout_refs = parts(refs, spec, end_day)
    train, before = read_days(store, train_refs, spec, spec.training.max_rows)
    if before is not None:
        log.info("training.max_rows %d: trained on a seeded, time-stratified sample of %d of the window's %d rows",
                 spec.training.max_rows, len(train), before)
    holdout, holdout_before = holdout_rows(store, holdout_refs, spec, end_day)
    return Window(train, holdout, before, holdout_before)


def read_holdout(store: ArtifactStore, refs: Sequence[SnapshotRef], spec: DatasetSpec, end_day: dt.date) -> pd.DataFrame:
    """The holdout frame: the rows of the holdout days (any other day of `refs` is not read), sampled to
    training.holdout_max_rows when they hold more; the same rows read_window gave the train step."""
    return holdout_rows(store, refs, spec, end_day)[0]


def holdout_rows(store: ArtifactStore, refs: Sequence[SnapshotRef], spec: DatasetSpec,
                 end_day: dt.date) -> tuple[pd.DataFrame, int | None]:
    """read_holdout's frame, and the holdout's rows before sampling (None: not sampled)."""
    _, holdout_refs = parts(refs, spec, end_day)
    holdout, before = read_days(store, holdout_refs, spec, spec.training.holdout_max_rows)
    if before is not None:
        log.info("training.holdout_max_rows %d: the holdout is a seeded, time-stratified sample of %d of its %d rows",
                 spec.training.holdout_max_rows, len(holdout), before)
    return holdout, before


def read_days(store: ArtifactStore, refs: Sequence[SnapshotRef], spec: DatasetSpec,
              max_rows: int | None) -> tuple[pd.DataFrame, int | None]:
    """Several days as one frame in day order, sampled to `max_rows` when they hold more (each day its share,
    seeded by day as the training window is); and the rows before sampling (None: not sampled). Without a
    sample the frame is snapshot.read_snapshots' (the monitor step's realised window, bounded)."""
    ordered = sorted(refs, key=lambda r: r.day)
    quotas = day_quotas({r.day: r.rows for r in ordered}, max_rows)
    kept, before = [], 0
    for ref in ordered:
        table, rows = _day_rows(store, ref, spec, quotas.get(ref.day))
        kept.append(table)
        before += rows
    table = None  # only `kept` holds the days now: _frame frees them as it converts
    return _frame(kept), (before if quotas else None)


def _day(ref: SnapshotRef) -> dt.date:
    return dt.date.fromisoformat(ref.day)


def _day_rows(store: ArtifactStore, ref: SnapshotRef, spec: DatasetSpec, keep: int | None) -> tuple[pa.Table, int]:
    """One day's rows within its bounds in (timestamp, entity key) order, `keep` of them (seeded) when given; and
    how many there were before sampling."""
    order = read_snapshot_table(store, ref, [spec.timestamp, spec.entity_key.name])  # two columns decide the rows
    positions = _ordered_positions(order, spec, ref)
    rows = order.num_rows if positions is None else len(positions)
    del order
    if keep is not None and keep < rows:
        chosen = sample_positions(rows, keep, spec.training.seed, _day(ref))
        positions = chosen if positions is None else positions[chosen]
    if positions is None:
        return read_snapshot_table(store, ref), rows
    return read_snapshot_rows(store, ref, positions), rows  # a row group at a time: never the whole day


def _ordered_positions(table: pa.Table, spec: DatasetSpec, ref: SnapshotRef) -> np.ndarray | None:
    """The positions of the rows inside the day's bounds (source.timezone), in (timestamp, entity key) order with
    ties kept in file order (split_train_holdout's order); None when that is every row as it is (the usual case)."""
    if table.num_rows == 0:
        return None
    zone, day = spec.source.timezone, _day(ref)
    ts = _utc(table.column(spec.timestamp).to_pandas())
    key = table.column(spec.entity_key.name).to_pandas()
    inside = ((ts >= pd.Timestamp(day, tz=zone)) & (ts < pd.Timestamp(day + dt.timedelta(days=1), tz=zone))).to_numpy()
    if inside.all() and _in_order(ts, key):
        return None
    if not inside.all():
        log.warning("snapshot %s (day %s): %d of its %d rows lie outside the day's bounds in %s: left out",
                    ref.url, day, int((~inside).sum()), table.num_rows, zone)
    where = np.flatnonzero(inside)
    order = pd.DataFrame({"ts": ts[inside], "key": key[inside]}).reset_index(drop=True)
    return where[order.sort_values(["ts", "key"], kind="mergesort").index.to_numpy()]


def _in_order(ts: pd.Series, key: pd.Series) -> bool:
    """True when the rows are already non-decreasing by (timestamp, entity key), so a stable sort would keep them
    as they are; False when not, or when it cannot tell (a missing key: the sort decides where it goes)."""
    t, k = ts.values, key.to_numpy()  # tz-aware timestamps as datetime64 (UTC), not Timestamp objects
    if len(t) < 2:
        return True
    try:
        later, same = t[1:] > t[:-1], t[1:] == t[:-1]
        return bool(np.all(later | (same & (k[1:] >= k[:-1]))))
    except TypeError:  # keys of mixed types: leave it to the sort
        return False


def _frame(tables: list[pa.Table]) -> pd.DataFrame:
    """The days' kept rows as one frame with a fresh index. Days with the same schema are joined in Arrow and
    converted once, each column's Arrow buffers freed as it converts; days whose types differ (a file source's
    per-day inference) are converted one by one and concatenated by pandas, as read_snapshots does."""
    rows = [t for t in tables if t.num_rows]
    if not rows:
        return tables[0].to_pandas() if tables else pd.DataFrame()
    tables.clear()
    if any(t.schema != rows[0].schema for t in rows[1:]):
        return pd.concat([t.to_pandas() for t in rows], ignore_index=True)
    joined = pa.concat_tables(rows)
    rows.clear()
    return joined.to_pandas(split_blocks=True, self_destruct=True)
