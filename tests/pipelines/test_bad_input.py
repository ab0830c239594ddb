"""Each kind of bad input: a one-line error naming the table or key and the problem, exit code 2, nothing written."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest

from pipelines.cli import main
from pipelines.errors import InputError
from pipelines.execution import dask_client, run_statistic
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


# ---------------------------------------------------------------------------- the mistakes of a first-time user
def _transitions(n_users: int = 40, horizon: int = 2) -> pd.DataFrame:
    """A small, valid transitions table: two levels (nothing, coupon), one state feature."""
    rng = np.random.default_rng(3)
    n = n_users * horizon
    action = rng.choice(["nothing", "coupon"], n)
    reward = (rng.random(n) < 0.3).astype(float)
    return pd.DataFrame({"user_id": np.repeat(np.arange(n_users), horizon), "day": np.tile(np.arange(horizon), n_users),
                         "action": action, "reward": reward, "cost": np.where(action == "coupon", 2.0 * reward, 0.0),
                         "propensity": np.full(n, 0.5), "state_spend": rng.normal(size=n),
                         "next_spend": rng.normal(size=n)})


def _scores(n: int = 60) -> pd.DataFrame:
    """Per-user values and costs of two levels, the first free."""
    rng = np.random.default_rng(4)
    return pd.DataFrame({"user_id": np.arange(n), "segment": rng.choice(["new", "loyal"], n),
                         "value_nothing": rng.random(n) * 0.1, "cost_nothing": np.zeros(n),
                         "value_coupon": rng.random(n), "cost_coupon": rng.random(n) + 0.5})


def _feature_logs(n: int = 300) -> pd.DataFrame:
    rng = np.random.default_rng(5)
    return _logs(n).assign(age=rng.normal(40, 10, n), channel=rng.choice(["web", "app"], n))


def _edges() -> pd.DataFrame:
    return pd.DataFrame({"src": [0, 1, 2, 3], "dst": [1, 2, 3, 0], "weight": [1.0, 1.0, 2.0, 1.0]})


def _readout_tables(tmp_path: Path, *unassigned: int) -> list[Path | str]:
    """`--assignment A --outcomes O` for 40 users in 10 clusters, with outcomes of the `unassigned` users too."""
    users = np.arange(40)
    assignment = pd.DataFrame({"user_id": users, "cluster": users // 4, "group": (users // 4) % 2})
    outcomes = pd.DataFrame({"user_id": np.concatenate([users, np.array(unassigned, dtype=int)]),
                             "outcome": np.concatenate([np.random.default_rng(6).normal(size=40),
                                                        np.ones(len(unassigned))])})
    return ["--assignment", _write(assignment, tmp_path / "assignment.parquet"),
            "--outcomes", _write(outcomes, tmp_path / "outcomes.parquet")]


def _cli(capfd, mlflow_uri: str, *args: str) -> tuple[int, str]:
    """Exit code and stderr of one command; file-descriptor capture, so that what the cluster's loggers or a C
    library print is seen too."""
    code = main([*args, "--tracking-uri", mlflow_uri])
    return code, capfd.readouterr().err.strip()


# Each case: (name, command writer -> argv, fragments the one line must contain). The writers put their tables
# under tmp_path; every case must fail before any output is written.
CASES = [
    ("decision logs as transitions",
     lambda d: ["constrained-rl", "--transitions", _write(_logs().assign(day=0), d / "logs.parquet")],
     ("transitions", "missing required column 'action'")),
    ("transitions without reward",
     lambda d: ["constrained-rl", "--transitions", _write(_transitions().drop(columns="reward"), d / "t.parquet")],
     ("transitions", "missing required column 'reward'")),
    ("a text state column",
     lambda d: ["constrained-rl", "--transitions",
                _write(_transitions().assign(state_spend=lambda f: f["state_spend"].round(1).astype(str)),
                       d / "t.parquet")],
     ("transitions", "'state_spend'", "expected numeric")),
    ("a state column with NaN",
     lambda d: ["constrained-rl", "--transitions",
                _write(_transitions().assign(next_spend=lambda f: f["next_spend"].where(f.index % 8 > 0)),
                       d / "t.parquet")],
     ("'next_spend'", "10 NaN, inf or missing values of 80 rows")),
    ("a state column without its next_ twin",
     lambda d: ["constrained-rl", "--transitions", _write(_transitions().drop(columns="next_spend"), d / "t.parquet")],
     ("missing required column 'next_spend'",)),
    ("transitions without any state",
     lambda d: ["constrained-rl", "--transitions",
                _write(_transitions().drop(columns=["state_spend", "next_spend"]), d / "t.parquet")],
     ("state_* columns",)),
    ("an action outside the level costs",
     lambda d: ["constrained-rl", "--transitions", _write(_transitions(), d / "t.parquet"),
                "--level-costs", "{nothing: 0}"],
     ("level_costs", "['coupon'] without a cost")),
    ("a repeated user and day",
     lambda d: ["constrained-rl", "--transitions",
                _write(pd.concat([_transitions(), _transitions().head(2)]), d / "t.parquet")],
     ("day: 2 rows repeat a (user_id, day) pair",)),
    ("a user whose days have a gap",
     lambda d: ["constrained-rl", "--transitions",
                _write(_transitions(horizon=3).query("day != 1"), d / "t.parquet")],
     ("day: 40 users do not have consecutive days",)),
    ("importance weighting without propensities",
     lambda d: ["constrained-rl", "--transitions", _write(_transitions().drop(columns="propensity"), d / "t.parquet"),
                "--importance-weighting", "on"],
     ("propensity: importance_weighting on needs a propensity column",)),
    ("scores without a zero-cost level",
     lambda d: ["allocate", "--scores", "--budget", "10", "--users",
                _write(_scores().assign(cost_nothing=0.1), d / "scores.parquet")],
     ("cost_nothing, cost_coupon: 60 of 60 users have no zero-cost level",)),
    ("scores with NaN",
     lambda d: ["allocate", "--scores", "--users",
                _write(_scores().assign(value_coupon=lambda f: f["value_coupon"].where(f.index % 20 > 0)),
                       d / "scores.parquet")],
     ("value_coupon: 3 NaN or infinite values of 60 users",)),
    ("negative costs",
     lambda d: ["allocate", "--scores", "--users",
                _write(_scores().assign(cost_coupon=lambda f: f["cost_coupon"].where(f.index > 0, -1.0)),
                       d / "scores.parquet")],
     ("cost_coupon: 1 negative costs of 60 users",)),
    ("repeated user ids",
     lambda d: ["allocate", "--scores", "--users", _write(pd.concat([_scores(), _scores().head(4)]),
                                                          d / "scores.parquet")],
     ("user_id: 4 of 64 ids are repeated",)),
    ("text user ids",
     lambda d: ["allocate", "--scores", "--users",
                _write(_scores().assign(user_id=lambda f: "u" + f["user_id"].astype(str)), d / "scores.parquet")],
     ("users: column 'user_id'", "expected integer")),
    ("a cap for a segment that does not exist",
     lambda d: ["allocate", "--scores", "--users", _write(_scores(), d / "scores.parquet"),
                "--segment-caps", "{nowhere: 5}"],
     ("segment_caps: unknown segment(s) ['nowhere']",)),
    ("a single arm",
     lambda d: ["select-features", "--logs", _write(_feature_logs().assign(arm="a"), d / "logs.parquet")],
     ("arm: needs at least 2 arms",)),
    ("an all-NaN feature",
     lambda d: ["select-features", "--logs", _write(_feature_logs().assign(age=np.nan), d / "logs.parquet"),
                "--features", "age,channel"],
     ("age: every value is missing",)),
    ("an unknown feature-scoring method",
     lambda d: ["select-features", "--logs", _write(_feature_logs(), d / "logs.parquet"), "--methods", "magic"],
     ("methods: unknown ['magic']",)),
    ("an unknown control arm",
     lambda d: ["select-features", "--logs", _write(_feature_logs(), d / "logs.parquet"), "--methods", "kl",
                "--control", "nobody"],
     ("control: arm 'nobody'",)),
    ("a bandit log without propensities",
     lambda d: ["fit-bandit", "--logs", _write(_feature_logs().drop(columns="propensity"), d / "logs.parquet")],
     ("logs: missing required column 'propensity'",)),
    ("unknown policy hyperparameters",
     lambda d: ["fit-bandit", "--logs", _write(_feature_logs(), d / "logs.parquet"), "--params", "{bogus: 1}"],
     ("unknown hyperparameters ['bogus']",)),
    ("an unknown estimator",
     lambda d: ["evaluate-policy", "--logs", _write(_feature_logs(), d / "logs.parquet"), "--policy", str(d),
                "--estimators", "magic"],
     ("estimators: unknown ['magic']",)),
    ("an edge weight of 0",
     lambda d: ["assign", "--edges", _write(_edges().assign(weight=0.0), d / "edges.parquet")],
     ("edges: column 'weight'", "outside (0, inf)")),
    ("edges without dst",
     lambda d: ["assign", "--edges", _write(_edges().drop(columns="dst"), d / "edges.parquet")],
     ("edges: missing required column 'dst'",)),
    ("an unknown exposure condition",
     lambda d: ["assign", "--edges", _write(_edges(), d / "edges.parquet"), "--exposure", "sometimes"],
     ("exposure: expected 'full'",)),
    ("outcomes of unassigned users",
     lambda d: ["readout", *_readout_tables(d, 999)],
     ("outcomes.user_id: 1 user(s) are not in the assignment",)),
    ("an unknown design",
     lambda d: ["readout", *_readout_tables(d), "--design", "magic"],
     ("design: must be one of",)),
]


@pytest.mark.parametrize(("name", "command", "fragments"), CASES, ids=[case[0] for case in CASES])
def test_each_documented_mistake_is_one_line(name, command, fragments, tmp_path, in_tmp, capfd, mlflow_uri):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    out = tmp_path / "out"
    argv = [str(arg) for arg in command(inputs)]
    code, err = _cli(capfd, mlflow_uri, *argv, "--out", str(out))
    _assert_one_line(code, err, *fragments)
    assert not out.exists()


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
@pytest.mark.parametrize("where", ["/proc/no-such-process/out/profile.csv", "{tmp}/" + "n" * 300 + "/profile.csv",
                                   "{tmp}/" + "n" * 250 + ".csv"])
def test_an_output_path_that_cannot_be_created(where, tmp_path, in_tmp, capfd, mlflow_uri):
    logs = _write(_logs(), tmp_path / "logs.parquet")
    target = where.format(tmp=tmp_path)
    code, err = _cli(capfd, mlflow_uri, "profile-logs", "--logs", str(logs), "--out", target)
    _assert_one_line(code, err, "output path not writable")
    assert not list(tmp_path.glob(".campaign-write-probe-*"))


@contextlib.contextmanager
def _worker_reports(caplog) -> Iterator[list]:
    """The records the cluster's workers log while the block runs (their logger does not propagate to the root)."""
    worker_log = logging.getLogger("distributed.worker")
    worker_log.addHandler(caplog.handler)
    reports: list = []
    try:
        yield reports
    finally:
        worker_log.removeHandler(caplog.handler)
        reports += [record.getMessage() for record in caplog.records if record.name == "distributed.worker"]


def test_a_failing_cluster_task_is_reported_once_by_the_caller_not_by_the_worker(caplog):
    class Refuses:
        def partial(self, chunk):
            raise InputError("reward: 3 values the statistic refuses")

        merge = finalize = staticmethod(lambda *states: states[0])

    frame = dd.from_pandas(pd.DataFrame({"reward": np.arange(10.0)}), npartitions=2)
    with _worker_reports(caplog) as reports, dask_client(), pytest.raises(InputError, match="the statistic refuses"):
        run_statistic(Refuses(), frame)
    assert not [report for report in reports if "Compute Failed" in report]


@pytest.mark.parametrize("index", ["a named row number", "an id column"])
def test_a_parquet_file_written_with_its_index_reads_like_any_other(index, tmp_path, in_tmp, capfd, mlflow_uri):
    logs = _logs()
    logs = logs.rename_axis("row") if index == "a named row number" else logs.set_index(logs["user_id"].rename("uid"))
    logs.to_parquet(tmp_path / "logs.parquet")  # pandas keeps the index, as a column or in the file's metadata
    out = tmp_path / "profile.csv"
    code, err = _cli(capfd, mlflow_uri, "profile-logs", "--logs", str(tmp_path / "logs.parquet"), "--out", str(out))
    assert code == 0, err
    assert pd.read_csv(out)["rows"].sum() == 50


def test_a_ragged_line_deep_in_a_csv_is_one_line_naming_it(tmp_path, in_tmp, capfd, caplog, mlflow_uri):
    lines = _logs(20_000).to_csv(index=False).splitlines()
    lines[15_000] += ",1,2"  # past the sample the CSV reader types the columns on: found by a cluster task
    (tmp_path / "logs.csv").write_text("\n".join(lines) + "\n")
    with _worker_reports(caplog) as reports:
        code, err = _cli(capfd, mlflow_uri, "profile-logs", "--logs", str(tmp_path / "logs.csv"),
                         "--out", str(tmp_path / "p.csv"))
    _assert_one_line(code, err, "logs: cannot read CSV", "Expected 5 fields in line 15001, saw 7")
    assert not [report for report in reports if "Compute Failed" in report]
