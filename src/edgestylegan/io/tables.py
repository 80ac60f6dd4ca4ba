"""CSV text of a list of row dicts (the benchmarks' tables; write it with `io.atomic.write_text`)."""
from __future__ import annotations

import csv
import io


def csv_text(rows: list[dict], fields: list[str]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()
