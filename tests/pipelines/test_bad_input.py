"""Each kind of bad input: a one-line error naming the table or key and the problem, exit code 2, nothing written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.cli import main
from pipelines.errors import InputError
from pipelines.tables import DECISION_LOG, EDGES, read_table, validate_frame
from tests.conftest import run_campaign


def _logs(n: int = 50) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({"user_id": np.arange(n), "arm": rng.choice(["a", "b"], n), "reward": rng.random(n),
                         "propensity": np.full(n, 0.5), "cost": np.ones(n)})


def _profile(capsys, mlflow_uri: str, logs: Path, out: Path, *extra: str) -> tuple[int, str]:
    code = main(["profile-logs", "--logs", str(logs), "--out", str(out), "--tracking-uri", mlflow_uri, *extra])
    return code, capsys.readouterr().err.strip()


def _assert_one_line(code: int, err: str, *fragments: str) -> None:
    assert code == 2, err
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, (fragment, err)


def _write(frame: pd.DataFrame, path: Path) -> Path:
    frame.to_parquet(path, index=False)
    return path


@pytest.mark.parametrize(
    ("name", "mutate", "fragments"),
    [
        ("missing column", lambda f: f.drop(columns="reward"), ("logs", "missing required column 'reward'")),
        ("wrong dtype", lambda f: f.assign(reward=f["reward"].astype(str)), ("logs", "'reward'", "expected numeric")),
        ("nan", lambda f: f.assign(reward=f["reward"].where(f.index % 10 != 0)), ("'reward'", "5 NaN")),
        ("inf", lambda f: f.assign(cost=f["cost"].where(f.index != 3, np.inf)), ("'cost'", "1 NaN, inf")),
        ("propensity out of range", lambda f: f.assign(propensity=f["propensity"].where(f.index > 1, 0.0)),
         ("'propensity'", "2 values", "(0, 1]")),
        ("missing arm label", lambda f: f.assign(arm=f["arm"].where(f.index != 7)), ("'arm'", "1 missing")),
        ("empty table", lambda f: f.iloc[:0], ("logs", "empty")),
    ],
)
def test_bad_log_tables(name, mutate, fragments, tmp_path, capsys, mlflow_uri):
    logs = _write(mutate(_logs()), tmp_path / "logs.parquet")
    out = tmp_path / "profile.csv"
    code, err = _profile(capsys, mlflow_uri, logs, out)
    _assert_one_line(code, err, *fragments)
    assert not out.exists()


def test_missing_input_file(tmp_path, capsys, mlflow_uri):
    code, err = _profile(capsys, mlflow_uri, tmp_path / "nowhere.parquet", tmp_path / "p.csv")
    _assert_one_line(code, err, "logs: file not found", "nowhere.parquet")


@pytest.mark.parametrize("content", [b"", b"PAR1 this is not parquet", b"\x00" * 64])
def test_corrupt_parquet(content, tmp_path, capsys, mlflow_uri):
    bad = tmp_path / "logs.parquet"
    bad.write_bytes(content)
    code, err = _profile(capsys, mlflow_uri, bad, tmp_path / "p.csv")
    _assert_one_line(code, err, "logs: cannot read parquet")


def test_truncated_parquet_in_a_folder(tmp_path, capsys, mlflow_uri):
    folder = tmp_path / "logs"
    folder.mkdir()
    _write(_logs(), folder / "part-0.parquet")
    good = (folder / "part-0.parquet").read_bytes()
    (folder / "part-1.parquet").write_bytes(good[: len(good) // 2])
    code, err = _profile(capsys, mlflow_uri, folder, tmp_path / "p.csv")
    _assert_one_line(code, err, "logs: cannot read parquet")


def test_output_path_not_writable(tmp_path, capsys, mlflow_uri):
    logs = _write(_logs(), tmp_path / "logs.parquet")
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    code, err = _profile(capsys, mlflow_uri, logs, blocker / "sub" / "profile.csv")
    _assert_one_line(code, err, "output path not writable")


def test_unknown_config_key(tmp_path, capsys):
    job = tmp_path / "job.yaml"
    job.write_text("seed: 1\nprofile-logs:\n  logs: l\n  out: o.csv\n  rewrad: x\n")
    _assert_one_line(main(["run", str(job)]), capsys.readouterr().err.strip(),
                     "unknown key 'rewrad'", "section 'profile-logs'")
    job.write_text("seed: 1\nstagez: {}\n")
    _assert_one_line(main(["run", str(job)]), capsys.readouterr().err.strip(), "unknown key 'stagez'", "top level")


def test_wrong_value_type_in_config(tmp_path, capsys):
    job = tmp_path / "job.yaml"
    job.write_text("seed: 1\ngenerate:\n  out: c\n  n_users: lots\n")
    _assert_one_line(main(["run", str(job)]), capsys.readouterr().err.strip(), "generate.n_users", "'lots'")
    job.write_text("seed: -3\ngenerate: {out: c}\n")
    _assert_one_line(main(["run", str(job)]), capsys.readouterr().err.strip(), "seed")
    assert not (tmp_path / "c").exists()


def test_config_file_problems(tmp_path, capsys):
    code = main(["run", str(tmp_path / "none.yaml")])
    _assert_one_line(code, capsys.readouterr().err.strip(), "config: file not found")
    job = tmp_path / "job.yaml"
    job.write_text("seed: [unclosed\n")
    _assert_one_line(main(["run", str(job)]), capsys.readouterr().err.strip(), "config: cannot parse")
    job.write_text("- a list\n")
    _assert_one_line(main(["run", str(job)]), capsys.readouterr().err.strip(), "must be a mapping")
    job.write_text("seed: 2\n")
    _assert_one_line(main(["run", str(job)]), capsys.readouterr().err.strip(), "no stage section")


def test_cli_usage_errors_are_one_line(capsys):
    _assert_one_line(main(["generate", "--users", "many"]), capsys.readouterr().err.strip(), "--users")
    _assert_one_line(main(["no-such-command"]), capsys.readouterr().err.strip(), "no-such-command")


def test_the_installed_script_exits_2_without_traceback(tmp_path):
    done = run_campaign("profile-logs", "--logs", "missing.parquet", "--out", "p.csv", cwd=tmp_path,
                        env={"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'm.db'}"})
    _assert_one_line(done.code, done.stderr.strip(), "logs: file not found")


def test_in_memory_validation_uses_the_same_contract():
    validate_frame(_logs(), DECISION_LOG)
    with pytest.raises(InputError, match="missing required column 'user_id'"):
        validate_frame(_logs().drop(columns="user_id"), DECISION_LOG)
    with pytest.raises(InputError, match="'weight' has 1 values of 3 rows outside"):
        validate_frame(pd.DataFrame({"src": [1, 2, 3], "dst": [2, 3, 1], "weight": [1.0, 0.0, 2.0]}), EDGES)


def test_read_table_returns_dask_frame_of_valid_data(tmp_path):
    frame = _logs()
    data = read_table(_write(frame, tmp_path / "logs.parquet"), DECISION_LOG, columns=["arm", "reward"])
    pd.testing.assert_frame_equal(data.compute().reset_index(drop=True), frame[["arm", "reward"]],
                                  check_dtype=False)
    with pytest.raises(InputError, match="missing column 'nope'"):
        read_table(tmp_path / "logs.parquet", DECISION_LOG, columns=["nope"])


def test_a_later_stage_bad_input_stops_the_job_before_any_work(tmp_path, capsys, mlflow_uri):
    bad = _write(_logs().drop(columns="arm"), tmp_path / "logs.parquet")
    job = tmp_path / "job.yaml"
    job.write_text(f"generate: {{out: campaign, n_users: 500}}\nprofile-logs: {{logs: {bad}, out: p.csv}}\n")
    code = main(["run", str(job), "--tracking-uri", mlflow_uri])
    _assert_one_line(code, capsys.readouterr().err.strip(), "missing required column 'arm'")
    assert not (tmp_path / "campaign").exists()  # generate never ran
