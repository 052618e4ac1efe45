"""Records are replaced atomically (temp file + rename): a reader polling a record while another
process rewrites it sees the previous complete version or the new complete one, never a torn
file, and no temporary files are left behind.

The "many runs finishing at once" test has each process write its own directory while nobody
reads, so it cannot see a write done in place; here a reader races a writer on one file.
"""

import json
import subprocess
import sys
import time
from pathlib import Path

from vitbench.record.rundir import atomic_write_json, atomic_write_text

PAD = 2_000_000  # ~2 MB per version: a write in place is visible half-done for a long while
VERSIONS = 60

WRITER = r"""
import sys
from vitbench.record.rundir import atomic_write_json, atomic_write_text
path, versions, pad, kind = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
body = "x" * pad
for v in range(1, versions + 1):
    rec = {"version": v, "pad": body, "tail": v}
    if kind == "json":
        atomic_write_json(path, rec)
    else:
        import json
        atomic_write_text(path, json.dumps(rec))
print("done", flush=True)
"""


def _race(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "result.json"
    atomic_write_json(path, {"version": 0, "pad": "x" * PAD, "tail": 0})
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(VERSIONS), str(PAD), kind],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen: list[int] = []
    torn: list[str] = []
    deadline = time.monotonic() + 60
    try:
        while writer.poll() is None and time.monotonic() < deadline:
            with open(path, "rb") as fh:  # the file always exists: a rename never removes it
                raw = fh.read()
            try:
                rec = json.loads(raw)
            except ValueError:
                torn.append(f"{len(raw)} bytes: {raw[:40]!r}...{raw[-40:]!r}")
                continue
            # a complete version: the whole padding and a matching tail
            if len(rec["pad"]) != PAD or rec["tail"] != rec["version"]:
                torn.append(f"inconsistent version {rec['version']}")
                continue
            seen.append(rec["version"])
    finally:
        if writer.poll() is None:
            writer.kill()
        out, err = writer.communicate()
    assert writer.returncode == 0 and "done" in out, err
    assert not torn, f"{len(torn)} torn reads out of {len(torn) + len(seen)}, e.g. {torn[:3]}"
    assert seen == sorted(seen), "a reader went back to an older version"
    assert len(seen) >= 5, f"the reader barely overlapped the writer ({len(seen)} reads)"
    # the last version is in place, complete, and nothing else is left in the directory
    final = json.loads(path.read_text())
    assert final["version"] == final["tail"] == VERSIONS and len(final["pad"]) == PAD
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.json"], "temporary files left behind"


def test_reader_never_sees_a_torn_json_record(tmp_path: Path) -> None:
    _race(tmp_path, "json")


def test_reader_never_sees_a_torn_text_record(tmp_path: Path) -> None:
    _race(tmp_path, "text")


def test_failed_write_keeps_the_old_record_and_leaves_no_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "progress.json"
    atomic_write_json(path, {"done": 1})
    try:
        atomic_write_json(path, {"bad": object()})  # not serialisable: fails before anything is written
    except TypeError:
        pass
    else:
        raise AssertionError("an unserialisable record was written")
    assert json.loads(path.read_text()) == {"done": 1}
    atomic_write_text(path, '{"done": 2}')
    assert json.loads(path.read_text()) == {"done": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["progress.json"]
