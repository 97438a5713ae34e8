"""The small "orders" spec the source tests share: churn.yaml's policy over a source they build."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

CHURN = Path(__file__).resolve().parents[2] / "include" / "specs" / "churn.yaml"


def spec_file(tmp_path: Path, source: dict[str, Any], name: str = "orders.yaml") -> Path:
    """churn.yaml's policy with a small model of its own over the given source."""
    data = yaml.safe_load(CHURN.read_text())
    data.update(
        name="orders", source=source, entity_key={"name": "customer_id", "type": "bigint"}, timestamp="event_ts",
        label={"name": "churned", "delay_days": 1},
        features=[{"name": "amount", "type": "numeric", "min": 0, "max": 1000},
                  {"name": "country", "type": "categorical", "categories": ["NO", "SE"]}])
    data["validation"].update(min_rows=1)
    data["promotion"]["slice_columns"] = ["country"]
    data["drift"] = {**data["drift"], "columns": {}}
    data["warehouse"] = {"schema": "orders"}
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path
