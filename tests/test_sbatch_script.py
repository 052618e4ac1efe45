"""Nothing from a profile, an experiment's file name or the results path reaches the sbatch script as
shell, except the profile's `setup:` lines (shell by design). Hostile profiles are generated, loaded and
rendered through the launcher's own executor (submitit writes the script); the script may hold only the
lines submitit writes for a benign profile, one `#SBATCH --option=value` line per option, and the setup
lines as given. No cluster needed: this is the text sbatch would read."""

from __future__ import annotations

import re
import string
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vitbench.errors import UserError
from vitbench.launch.launcher import job_name, make_executor
from vitbench.launch.profiles import load_profile

NASTY = ["\n", "\r", "\x00", "\x1b", "\u2028", "'", '"', ";", "$(id)", "`id`", "\\", " ", "#", "\n#SBATCH --x=1\n",
         "\ntouch /tmp/pwned\n", "--wrap=id", "%j"]
nasty_text = st.lists(st.one_of(st.sampled_from(NASTY), st.text(string.printable, max_size=6)),
                      max_size=4).map("".join)
option_keys = st.one_of(st.sampled_from(["exclude", "mail-type", "mail_user", "comment", "begin", "output", "array",
                                         "wrap", "x\ny", "ok-key", "Bad", "a b", "-x", "nice"]), nasty_text)
option_values = st.one_of(nasty_text, st.integers(-3, 10**6), st.booleans(), st.none(),
                          st.lists(st.integers(), max_size=2))
profiles = st.fixed_dictionaries({}, optional={
    "partition": nasty_text, "account": nasty_text, "qos": nasty_text, "constraint": nasty_text,
    "description": nasty_text, "setup": st.lists(nasty_text, max_size=3),
    "additional": st.dictionaries(option_keys, option_values, max_size=3),
    "time_min": st.integers(1, 10_000), "cpus_per_task": st.integers(1, 8)})

SBATCH_LINE = re.compile(r"#SBATCH --[a-z][a-z0-9]*(?:-[a-z0-9]+)*(=.*)?")


def render(profile_file: Path, results: Path, experiment: str = "exp") -> str:
    profile = load_profile(str(profile_file))
    ex = make_executor(profile, "slurm", results, job_name(experiment, "smoke"))
    return ex._executor._make_submission_file_text("python -u -m submitit.core._submit FOLDER", "uid")


def benign_lines(tmp: Path, setup: list[str]) -> set[str]:
    f = tmp / "benign.yaml"
    f.write_text(yaml.safe_dump({"partition": "debug", "setup": setup}))
    return {ln for ln in render(f, tmp / "results").splitlines() if not ln.startswith("#SBATCH")}


def assert_script_is_ours(script: str, allowed: set[str], options: int) -> None:
    header = [ln for ln in script.splitlines() if ln.startswith("#SBATCH")]
    for line in script.splitlines():
        assert line in allowed or SBATCH_LINE.fullmatch(line), f"a line nobody wrote: {line!r}"
    assert len(header) == options, header


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=profiles, name=nasty_text)
def test_hostile_profiles_and_names_never_add_a_script_line(doc: dict, name: str, tmp_path_factory) -> None:  # noqa: ANN001
    tmp = tmp_path_factory.mktemp("sbatch")
    f = tmp / "p.yaml"
    f.write_text(yaml.safe_dump(doc, allow_unicode=True))
    try:
        script = render(f, tmp / "results", experiment=name or "exp")
    except UserError as exc:
        assert "\n" not in str(exc) and "\r" not in str(exc) and "\x1b" not in str(exc)
        return
    setup = list(doc.get("setup", []))
    allowed = benign_lines(tmp, setup)
    # submitit's own options + the profile's explicit ones + the additional ones
    base = len([ln for ln in render(tmp / "benign.yaml", tmp / "results").splitlines() if ln.startswith("#SBATCH")])
    explicit = sum(1 for k in ("account", "qos", "constraint") if doc.get(k)) - (0 if doc.get("partition") else 1)
    assert_script_is_ours(script, allowed, base + explicit + len(doc.get("additional", {})))
    assert re.search(r"^#SBATCH --job-name=vitbench-[A-Za-z0-9._-]+$", script, re.M), script


@pytest.mark.parametrize("key,value,match", [
    ("partition", "debug\ntouch /tmp/pwned", "partition: holds the control character '\\\\n'"),
    ("account", "a\rb", "account: holds the control character"),
    ("qos", "normal\x00", "qos: holds the control character"),
    ("constraint", "a100\u2028echo", "constraint: holds the control character"),
    ("additional", {"exclude\ntouch x": "n1"}, "sbatch long-option names"),
    ("additional", {"comment": "ok\n#SBATCH --wrap=id"}, "additional.comment: holds the control character"),
    ("additional", {"output": "/tmp/x"}, "additional.output: is set by vitbench"),
    ("additional", {"exclude": ["a", "b"]}, "must be a string, number or true"),
    ("setup", ["module load x\nrm -rf /"], r"setup\[0\]: one shell line per item"),
])
def test_each_hostile_value_is_one_line_naming_the_key(tmp_path: Path, key: str, value: object, match: str) -> None:
    f = tmp_path / "p.yaml"
    f.write_text(yaml.safe_dump({key: value}, allow_unicode=True))
    with pytest.raises(UserError, match=match) as exc:
        load_profile(str(f))
    assert str(exc.value).startswith(str(f)) and "\n" not in str(exc.value)


def test_setup_lines_are_shell_by_design_and_kept_verbatim(tmp_path: Path) -> None:
    f = tmp_path / "p.yaml"
    setup = ["module load cuda/12.4", "source $HOME/env/bin/activate; export X='a b'"]
    f.write_text(yaml.safe_dump({"partition": "gpu", "setup": setup, "additional": {"exclude": "node[1-2]",
                                                                                     "exclusive": True}}))
    script = render(f, tmp_path / "results", experiment="my exp\n#SBATCH --wrap=id")
    lines = script.splitlines()
    i = lines.index("# setup")
    assert lines[i + 1:i + 3] == setup
    assert "#SBATCH --partition=gpu" in lines and "#SBATCH --exclude='node[1-2]'" in lines
    assert "#SBATCH --exclusive" in lines
    assert "#SBATCH --job-name=vitbench-my_exp_SBATCH_--wrap_id-smoke" in lines
    assert not any(ln.startswith("#SBATCH --wrap") for ln in lines)


def test_a_results_path_with_a_newline_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "p.yaml"
    f.write_text("partition: debug\n")
    with pytest.raises(UserError, match="--results: the results path holds a control character"):
        render(f, tmp_path / "res\ntouch pwned")


def test_every_profile_value_reaches_the_sbatch_script(tmp_path: Path) -> None:
    """The example GPU site profile, rendered: each value is the #SBATCH line sbatch acts on."""
    repo = Path(__file__).resolve().parents[1]
    script = render(repo / "slurm" / "profiles" / "example-gpu.yaml", tmp_path / "results", experiment="t8")
    lines = script.splitlines()
    for want in ["--partition=gpu", "--account=my-project", "--qos=normal", "--constraint='h100|a100'", "--nodes=1",
                 "--ntasks-per-node=8", "--gpus-per-node=8", "--cpus-per-task=10", "--mem=480GB",
                 "--time=2880",  # time_min, in minutes
                 "--signal=USR2@120",  # signal_delay_s: the checkpoint-and-requeue lead before the limit
                 "--job-name=vitbench-t8-smoke"]:
        assert f"#SBATCH {want}" in lines, (want, script)
    i = lines.index("# setup")
    assert lines[i + 1:i + 3] == ["module load cuda/12.4", "source $HOME/venvs/vitbench/bin/activate"]
    assert f"#SBATCH --output={tmp_path / 'results'}/slurm/%j/%j_0_log.out" in lines
    # the local cluster's profile: one core, 2 GB, 60 minutes, its partition and its signal lead
    local = render(repo / "slurm" / "profiles" / "local.yaml", tmp_path / "r2").splitlines()
    assert {"#SBATCH --partition=debug", "#SBATCH --cpus-per-task=1", "#SBATCH --mem=2GB", "#SBATCH --time=60",
            "#SBATCH --signal=USR2@30"} <= set(local)
