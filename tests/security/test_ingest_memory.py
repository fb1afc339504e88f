"""The ingest worker's memory stays bounded on a hostile 100 MB single-row file.

The real task (``workers.ingest.ingest_upload``) runs in a fresh process, as in the ingest
worker, and reports its peak RSS. Before the row bounds, 100 MB of commas in one row cost
928 MB there (a list of 100 million fields) and 200 MB would pass the pod's 2 GiB limit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from campaigns.runtime.stores import resolve
from campaigns.services import uploads
from tests.integration.test_uploads import make_campaign

ROOT = Path(__file__).resolve().parents[2]
ROW_BYTES = 100 * 1024 * 1024
LIMIT_BYTES = 300 * 1024 * 1024

# The peak of this process's own memory (VmHWM): ru_maxrss would also count the parent's
# RSS at fork (Linux keeps it across exec), i.e. whatever the pytest worker ran before.
_RUN_TASK = """
import json, re, sys
from pathlib import Path
from workers.ingest import ingest_upload
from campaigns.runtime.stores import resolve
from campaigns.services import uploads
ingest_upload(int(sys.argv[1]))
done = uploads.get_upload(resolve().engine, int(sys.argv[1]))
status = Path("/proc/self/status").read_text()
peak_kib = int(re.search(r"VmHWM:\\s*(\\d+) kB", status).group(1))
print(json.dumps({"status": done.status, "error": done.error, "peak_bytes": peak_kib * 1024}))
"""


def _hostile(kind: str) -> Iterator[bytes]:
    yield b"phone,first_name\n+4915123456701,Anna\n+4915123456702,"
    filler = {"commas": b",", "quoted": b"x", "plain": b"y"}[kind]
    if kind == "quoted":
        yield b'"never closed '
    block = filler * (1 << 20)
    for _ in range(ROW_BYTES >> 20):
        yield block
    yield b"\n+4915123456703,Jo\n"


@pytest.mark.parametrize("kind", ["commas", "quoted", "plain"])
def test_a_100_mb_row_is_refused_with_bounded_memory(db: Engine, kind: str) -> None:
    cid = make_campaign(db)
    settings = resolve().settings
    spooled = uploads.spool_upload(_hostile(kind), settings.spool_dir, max_bytes=2 * ROW_BYTES)
    upload = uploads.register_upload(db, cid, spooled, filename=f"{kind}.csv")
    done = subprocess.run(
        [sys.executable, "-c", _RUN_TASK, str(upload.id)],
        env=dict(os.environ),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"{kind}: peak RSS {report['peak_bytes'] / 2**20:.0f} MiB")
    assert report["status"] == "refused", report
    assert "line 3" in report["error"]
    assert report["peak_bytes"] < LIMIT_BYTES, report
    assert not spooled.path.exists()  # refused whole: the spooled file is gone too
