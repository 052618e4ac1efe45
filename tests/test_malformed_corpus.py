"""Every malformed experiment file gets exit code 2 and ONE error line; nothing is submitted.

The corpus lives in tests/malformed/; each file's first line says ``# expect: TEXT`` with text
that the error message must contain (usually the key path or the offending value).
"""

import subprocess
import sys
from pathlib import Path

import pytest

from vitbench.cli import main

CORPUS = sorted((Path(__file__).parent / "malformed").glob("*.yaml"))


def _expected(path: Path) -> str:
    first = path.read_bytes().splitlines()[0].decode()
    assert first.startswith("# expect: "), path
    return first[len("# expect: "):]


def test_corpus_is_large_enough() -> None:
    assert len(CORPUS) >= 30


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.stem)
def test_malformed_file_is_rejected(path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = tmp_path / "results"
    code = main(["run", str(path), "--scale", "smoke", "--cluster", "slurm", "--results", str(results)])
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("vitbench: error: ") and path.name in lines[0]
    assert _expected(path) in lines[0]
    assert not results.exists(), "nothing may be written or submitted for a bad file"


@pytest.mark.parametrize("argv,match", [
    (["--cluster", "kubernetes"], "--cluster: unknown cluster 'kubernetes'; allowed: slurm, local, debug"),
    (["--profile", "no-such-profile"], "--profile: unknown profile 'no-such-profile'"),
    (["--scale", "huge"], "--scale: unknown scale 'huge'"),
    (["--set", "pretrain.stepz=3"], "pretrain.stepz: unknown key"),
    (["--set", "pretrain.steps=-3"], "pretrain.steps: must be >= 0"),
    (["--max-runs", "2"], "more than the cap of 2"),
])
def test_bad_flags(argv: list[str], match: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = tmp_path / "r"
    code = main(["run", "ablations/pos_embed.yaml", "--scale", "smoke", "--results", str(results), *argv])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and match in err, err
    assert not results.exists()


def test_bad_profile_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    prof = tmp_path / "site.yaml"
    prof.write_text("partition: gpu\ntime_min: -5\n")
    code = main(["run", "ablations/pos_embed.yaml", "--scale", "smoke", "--results", str(tmp_path / "r"),
                 "--profile", str(prof)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.endswith(f"{prof}: time_min: must be >= 1, got -5")
    prof.write_text("partitoin: gpu\n")
    assert main(["run", "ablations/pos_embed.yaml", "--scale", "smoke", "--profile", str(prof)]) == 2
    assert "partitoin: unknown key; allowed: partition" in capsys.readouterr().err


def test_real_cli_exit_code_and_no_traceback(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "vitbench.cli", "run", str(CORPUS[0]), "--scale", "smoke",
                           "--results", str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
