import datetime as dt
import logging
import os
import subprocess
import sys
import time
from decimal import Decimal

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from include.nightshift import artifacts, demo_data
from include.nightshift.artifacts import ArtifactStore
from include.nightshift.snapshot import SnapshotReadError, SnapshotRef, read_snapshot, take_snapshot

DAY = dt.date(2026, 3, 2)


@pytest.fixture
def source(pg_conn):
    demo_data.create_source_table(pg_conn)
    for offset in (-1, 0, 1):
        demo_data.load_day(pg_conn, DAY + dt.timedelta(days=offset), 500)
    demo_data.reveal_labels(pg_conn, DAY - dt.timedelta(days=1), 500)
    return pg_conn


def test_snapshot_holds_exactly_the_day_with_source_types(source, churn_spec, tmp_path):
    store = ArtifactStore(tmp_path)
    ref = take_snapshot(source, store, churn_spec, DAY)
    df = read_snapshot(store, ref)
    assert ref.rows == len(df) == 500
    assert list(df.columns) == churn_spec.columns
    assert df[churn_spec.timestamp].min() >= pd.Timestamp(DAY, tz="UTC")
    assert df[churn_spec.timestamp].max() < pd.Timestamp(DAY + dt.timedelta(days=1), tz="UTC")
    assert df["customer_id"].dtype == "int64"
    assert df["plan"].map(type).eq(str).all()
    assert df["churned"].isna().all()  # labels come a day later
    assert ref.url.endswith(f"snapshots/churn/{DAY}/{ref.sha256}.parquet")


def test_rerun_reproduces_file_and_hash_and_changes_with_content(source, churn_spec, tmp_path):
    store = ArtifactStore(tmp_path)
    first = take_snapshot(source, store, churn_spec, DAY)
    again = take_snapshot(source, store, churn_spec, DAY)
    assert again == first
    with source.transaction(), source.cursor() as cur:
        cur.execute("UPDATE churn_events SET age = age + 1 WHERE customer_id = 7 AND event_ts >= %s", (DAY,))
    changed = take_snapshot(source, store, churn_spec, DAY)
    assert changed.sha256 != first.sha256
    assert len(store.list(store.url("snapshots", "churn", DAY.isoformat()))) == 2


def test_labelled_snapshot_keeps_only_rows_with_known_labels(source, churn_spec, tmp_path):
    store = ArtifactStore(tmp_path)
    yesterday = take_snapshot(source, store, churn_spec, DAY - dt.timedelta(days=1), labelled=True)
    today = take_snapshot(source, store, churn_spec, DAY, labelled=True)
    assert yesterday.rows == 500 and today.rows == 0
    assert set(read_snapshot(store, yesterday)["churned"].unique()) <= {0, 1}


def test_text_column_stays_text_and_infinity_survives(pg_conn, churn_spec, tmp_path):
    demo_data.create_source_table(pg_conn)
    demo_data.load_day(pg_conn, DAY, 50)
    with pg_conn.transaction(), pg_conn.cursor() as cur:
        cur.execute("ALTER TABLE churn_events ALTER COLUMN age TYPE text USING age::text")
        cur.execute("UPDATE churn_events SET tenure_months = 'Infinity' WHERE customer_id = 1")
    df = read_snapshot(ArtifactStore(tmp_path), take_snapshot(pg_conn, ArtifactStore(tmp_path), churn_spec, DAY))
    assert df["age"].map(type).eq(str).all()
    assert df.loc[df.customer_id == 1, "tenure_months"].iloc[0] == float("inf")


def test_ref_round_trips_through_json():
    ref = SnapshotRef(url="/x.parquet", sha256="ab", rows=3, day="2026-01-01", labelled=False)
    assert SnapshotRef.from_dict(ref.to_dict()) == ref


def test_numeric_is_kept_exact_in_the_snapshot_and_read_as_float(pg_conn, churn_spec, tmp_path):
    """numeric columns become decimals of their declared precision and scale (or, undeclared,
    the scale their values need), never float64 on the way in; the steps read them as float64."""
    demo_data.create_source_table(pg_conn)
    demo_data.load_day(pg_conn, DAY, 50)
    with pg_conn.transaction(), pg_conn.cursor() as cur:
        cur.execute("ALTER TABLE churn_events ALTER COLUMN monthly_charges TYPE numeric(12, 2), "
                    "ALTER COLUMN total_charges TYPE numeric USING round(total_charges::numeric, 2), "
                    "ALTER COLUMN referrals TYPE integer, ALTER COLUMN churned TYPE smallint")
        cur.execute("UPDATE churn_events SET monthly_charges = 1234567890.12, "
                    "total_charges = 0.1000000000000000055511151231257827 WHERE customer_id = 1")
    store = ArtifactStore(tmp_path)
    ref = take_snapshot(pg_conn, store, churn_spec, DAY)
    with store.open(ref.url) as handle:
        table = pq.read_table(handle)
    assert table.schema.field("monthly_charges").type == pa.decimal128(12, 2)
    assert table.schema.field("total_charges").type == pa.decimal128(38, 34)
    assert table.schema.field("referrals").type == pa.int64() and table.schema.field("churned").type == pa.int64()
    first = table.filter(pc.equal(table["customer_id"], 1))
    assert first["monthly_charges"][0].as_py() == Decimal("1234567890.12")
    assert first["total_charges"][0].as_py() == Decimal("0.1000000000000000055511151231257827")
    assert not table.schema.metadata or b"ADBC" not in b"".join(table.schema.metadata.values())

    df = read_snapshot(store, ref)
    assert df["monthly_charges"].dtype == "float64" and df["total_charges"].dtype == "float64"
    assert df.loc[df.customer_id == 1, "monthly_charges"].iloc[0] == 1234567890.12


def test_a_value_numeric_cannot_hold_exactly_is_refused_naming_the_column(pg_conn, churn_spec, tmp_path):
    demo_data.create_source_table(pg_conn)
    demo_data.load_day(pg_conn, DAY, 20)
    with pg_conn.transaction(), pg_conn.cursor() as cur:
        cur.execute("ALTER TABLE churn_events ALTER COLUMN age TYPE numeric")
        cur.execute("UPDATE churn_events SET age = 'NaN' WHERE customer_id = 3")
    with pytest.raises(ValueError, match="'age' .*numeric"):
        take_snapshot(pg_conn, ArtifactStore(tmp_path), churn_spec, DAY)


# --- a stored snapshot is checked against its name (issue 11, item 7) ---


def test_a_corrupt_stored_snapshot_is_rewritten_on_reuse_naming_the_path(source, churn_spec, tmp_path, caplog):
    """Reuse hashes the stored file: a truncated or altered one is rewritten from the source (same
    hash as before), with a warning that names its path; an intact one is left untouched."""
    store = ArtifactStore(tmp_path)
    first = take_snapshot(source, store, churn_spec, DAY)
    path = tmp_path / "snapshots" / "churn" / DAY.isoformat() / f"{first.sha256}.parquet"
    good = path.read_bytes()
    for damage in (good[: len(good) // 2], good[:100] + b"\0" * 16 + good[116:]):  # truncated, then bytes flipped
        path.write_bytes(damage)
        with caplog.at_level(logging.WARNING, logger="include.nightshift.snapshot"):
            again = take_snapshot(source, store, churn_spec, DAY)
        assert again == first and path.read_bytes() == good
        assert any(str(path) in r.getMessage() and "corrupt" in r.getMessage() for r in caplog.records)
        caplog.clear()
    before = path.stat().st_mtime_ns
    assert take_snapshot(source, store, churn_spec, DAY) == first
    assert path.stat().st_mtime_ns == before and not caplog.records  # intact: reused as is
    assert len(read_snapshot(store, first)) == 500


def test_a_corrupt_snapshot_read_directly_names_its_path_and_day(source, churn_spec, tmp_path):
    store = ArtifactStore(tmp_path)
    ref = take_snapshot(source, store, churn_spec, DAY)
    path = tmp_path / "snapshots" / "churn" / DAY.isoformat() / f"{ref.sha256}.parquet"
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(SnapshotReadError) as caught:
        read_snapshot(store, ref)
    message = str(caught.value)
    assert str(path) in message and f"day {DAY}" in message and "<Buffer>" not in message.split(": ")[0]
    assert f"not to the {ref.sha256} its name says" in message
    with pytest.raises(SnapshotReadError, match=f"{path}.*day {DAY}.*corrupt"):
        read_snapshot(store, ref.url)  # a bare URL: the day comes from its folder
    path.unlink()
    with pytest.raises(SnapshotReadError, match=f"{path} \\(day {DAY}\\) cannot be read: the file does not exist"):
        read_snapshot(store, ref)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_temp_files_of_dead_writers_are_removed_and_live_ones_kept(source, churn_spec, tmp_path):
    """A writer killed between its copy and its rename leaves `<target>.tmp-<pid>`; the next write to the
    folder removes it once nothing can still be writing it, and a failed write removes its own."""
    store = ArtifactStore(tmp_path)
    folder = tmp_path / "snapshots" / "churn" / DAY.isoformat()
    folder.mkdir(parents=True)
    old = time.time() - artifacts.TMP_DEAD_GRACE_SECONDS - 60
    ancient = time.time() - artifacts.TMP_MAX_AGE_SECONDS - 60
    cases = {"dead": (_dead_pid(), old), "dead fresh": (_dead_pid(), time.time()), "live": (os.getpid(), old),
             "live ancient": (1, ancient)}  # name: (pid, last change)
    files = {}
    for i, (name, (pid, when)) in enumerate(cases.items()):
        files[name] = folder / f"{i}.parquet.tmp-{pid}"
        files[name].write_bytes(b"partial")
        os.utime(files[name], (when, when))
    take_snapshot(source, store, churn_spec, DAY)
    left = {name for name, path in files.items() if path.exists()}
    assert left == {"dead fresh", "live"}  # a fresh file may be another host's write; a live pid's is in progress

    class Boom(Exception):
        pass

    def failing_replace(src, dst):
        raise Boom(dst)

    original = os.replace
    os.replace = failing_replace
    try:
        with pytest.raises(Boom):
            store.put_text("x", store.url("snapshots", "churn", DAY.isoformat(), "note.txt"))
    finally:
        os.replace = original
    assert not list(folder.glob("note.txt.tmp-*"))
