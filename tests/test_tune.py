"""`compare --tune`: the same search on the validation split for every variant (issue 19)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from test_compare_engine import cli, summary

SPACE = ["--tune-space", "train.lr=0.0003,0.01"]
ARGS = ["unimodal:text", "unimodal:audio", "multimodal:sum", "--epochs", "2", "--jobs", "1", "--quiet", *SPACE]


def trials(out: Path) -> dict[str, list[dict]]:
    found: dict[str, list[dict]] = {}
    for path in sorted(out.glob("tune/*/trial-*/tune-result.json")):
        saved = json.loads(path.read_text())
        found.setdefault(saved["variant"], []).append({**saved, "folder": path.parent})
    return found


def choose_here(ts: list[dict]) -> dict:
    """The rule, counted here from the trials' files: best score, then lowest validation loss
    at the kept epoch, then the first trial."""
    def loss(t):
        rows = [json.loads(line) for line in (t["folder"] / "metrics.jsonl").read_text().splitlines()]
        return next(r["val_loss"] for r in rows if r["epoch"] == t["best_epoch"])

    best = max(t["score"] for t in ts)
    tied = [t for t in ts if t["score"] == best]
    return min(tied, key=loss)


@pytest.fixture(scope="module")
def tuned(toy_small, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tune") / "cmp"
    cli("compare", *ARGS, "--data", toy_small, "--seeds", "2", "--out", out)
    return out


# ----------------------------------------------------------------------------- the search itself

def test_each_variant_gets_the_setting_with_its_best_validation_score(tuned):
    found = trials(tuned)
    assert sorted(found) == ["multimodal:sum", "unimodal:audio", "unimodal:text"]
    rows = {r["variant"]: r for r in summary(tuned)}
    for variant, ts in found.items():
        assert sorted(t["values"]["train.lr"] for t in ts) == [0.0003, 0.01]  # the whole grid, for every variant
        best = choose_here(ts)
        assert rows[variant]["tuned"] == best["values"]
        assert rows[variant]["tuned_validation"] == pytest.approx(best["score"])
        # every seed of the variant trained with the chosen value
        seeds = list(tuned.glob(f"runs/{variant.replace(':', '-')}-seed*"))
        assert len(seeds) >= 2
        for run in seeds:
            assert f"lr: {best['values']['train.lr']}" in (run / "config.yaml").read_text()


def test_trials_never_score_the_test_split_and_fused_trials_start_from_the_chosen_unimodal_ones(tuned):
    found = trials(tuned)
    for ts in found.values():
        for t in ts:
            assert not (t["folder"] / "eval-test.json").exists()
            assert t["best_epoch"] >= 1 and 0 <= t["score"] <= 1
    chosen = {v: choose_here(ts)["folder"] for v, ts in found.items()}
    for t in found["multimodal:sum"]:
        config = (t["folder"] / "config.yaml").read_text()
        assert str(chosen["unimodal:audio"].resolve()) in config and str(chosen["unimodal:text"].resolve()) in config


def test_report_names_the_space_and_each_choice(tuned):
    report = (tuned / "report.md").read_text()
    assert "## Tuning" in report and "`train.lr` in 0.0003, 0.01" in report
    for row in summary(tuned):
        if row["tuned"]:
            assert f"| {row['variant']} | train.lr={row['tuned']['train.lr']} |" in report
    header = (tuned / "summary.csv").read_text().splitlines()[0]
    assert "tuned" in header.split(",")


def test_a_resumed_comparison_reuses_its_trials(tuned, toy_small):
    stamps = {p: p.stat().st_mtime_ns for p in tuned.glob("tune/*/trial-*/tune-result.json")}
    cli("compare", *ARGS, "--data", toy_small, "--seeds", "3", "--out", tuned)
    assert {p: p.stat().st_mtime_ns for p in tuned.glob("tune/*/trial-*/tune-result.json")} == stamps
    assert {r["n"] for r in summary(tuned)} == {3}


def test_the_search_reads_no_test_row(toy_small, tmp_path, monkeypatch):
    """In process: while the search runs, nothing asks the data for its test rows (or all rows)."""
    from mmcli import config as config_mod
    from mmcli.compare import runner, tune
    from mmcli.pipeline import RunData

    cfg = config_mod.resolve(flags={"data.manifest": str(toy_small), "train.epochs": 1})
    plan, pool = runner.make_plan(cfg, ["unimodal:text", "multimodal:concat"], 1, None, None,
                                  tune={"space": {"model.dropout": [0.0, 0.3]}, "trials": None})
    asked: list = []
    original = RunData.part

    def spy(self, split):
        asked.append(split)
        return original(self, split)

    monkeypatch.setattr(RunData, "part", spy)
    out = tmp_path / "cmp"
    runner.prepare_out(out, False)
    tune.tune_plan(plan, pool, out)
    assert "train" in asked and "val" in asked
    assert "test" not in asked and None not in asked
    assert set(plan.tuned) == {"unimodal:text", "multimodal:concat"}
    assert all(c["fingerprint"] for c in plan.cells)
    dropouts = {c["variant"]: plan.tuned[c["variant"]]["values"]["model.dropout"] for c in plan.cells}
    assert set(dropouts.values()) <= {0.0, 0.3}


# ----------------------------------------------------------------------------- the space

def test_default_space_and_grid():
    from mmcli.compare.tune import default_space, grid
    from mmcli.config import Config

    base = Config()
    space = default_space(base)
    assert space == {"train.lr": [pytest.approx(base.train.lr / 3, rel=1e-2), base.train.lr, pytest.approx(base.train.lr * 3)],
                     "train.weight_decay": [base.train.weight_decay, pytest.approx(base.train.weight_decay * 10)]}
    points = grid(space, None, 0)
    assert len(points) == 6 and len({json.dumps(p, sort_keys=True) for p in points}) == 6
    some = grid(space, 3, 0)
    assert len(some) == 3 and some == grid(space, 3, 0) and all(p in points for p in some)
    assert grid(space, 10, 0) == points  # more trials than points: the whole grid


def test_default_space_stays_in_range_and_keeps_the_configured_value():
    from mmcli.compare.tune import default_space
    from mmcli.config import resolve

    space = default_space(resolve(sets=["train.lr=0.0012345", "train.weight_decay=0"]))
    assert space["train.lr"][1] == 0.0012345 and space["train.weight_decay"] == [0.0]
    space = default_space(resolve(sets=["train.lr=5", "train.weight_decay=0.5"]))
    assert space == {"train.lr": [1.67, 5.0], "train.weight_decay": [0.5, 5.0]}  # lr 15 is out of range


def test_choose_takes_the_best_finite_score_then_the_lower_loss_then_the_first():
    from mmcli.compare.tune import choose

    nan = float("nan")
    trials = [{"score": nan, "loss": 0.1, "i": 0}, {"score": 0.5, "loss": 0.1, "i": 1}, {"score": 0.7, "loss": 0.9, "i": 2},
              {"score": 0.7, "loss": 0.8, "i": 3}, {"score": 0.7, "loss": 0.8, "i": 4}, {"score": None, "i": 5},
              {"score": 0.2, "loss": None, "i": 6}]
    assert choose(trials, True)["i"] == 3  # 0.7 three times: the lowest loss, then the first
    assert choose(trials, False)["i"] == 6  # mae, loss: lower is better
    assert choose([{"score": 0.7, "loss": None, "i": 0}, {"score": 0.7, "loss": 2.0, "i": 1}], True)["i"] == 1
    assert choose([{"score": nan}, {"score": None}], True) is None


def test_print_jobs_searches_while_planning_and_each_job_trains_the_choice(toy_small, tmp_path):
    out = tmp_path / "cmp"
    printed = cli("compare", "unimodal:text", "--data", toy_small, "--epochs", "1", "--tune-space",
                  "model.dropout=0.0,0.4", "--out", out, "--print-jobs").stdout.splitlines()
    assert len(printed) == 1 and printed[0].endswith("--job 0")
    assert len(list(out.glob("tune/unimodal-text/trial-*/tune-result.json"))) == 2
    chosen = json.loads((out / "compare.json").read_text())["tuned"]["unimodal:text"]["values"]["model.dropout"]
    cli("compare", "--out", out, "--job", "0", "--quiet")
    assert f"dropout: {chosen}" in (out / "runs" / "unimodal-text-seed0" / "config.yaml").read_text()
    cli("compare", "--collect", out, "--quiet")
    assert summary(out)[0]["tuned"] == {"model.dropout": chosen}


def test_parse_space_reads_values_as_yaml():
    from mmcli.compare.tune import parse_space

    assert parse_space(["train.lr=0.001,3e-3", "model.dropout=[0, 0.5]", "train.augment=true,false"]) == {
        "train.lr": [0.001, 0.003], "model.dropout": [0, 0.5], "train.augment": [True, False]}


@pytest.mark.parametrize("args, words", [
    (["--tune-space", "data.image_size=32,64"], "not searchable"),
    (["--tune-space", "train.seed=1,2"], "not searchable"),
    (["--tune-space", "model.fusion=sum,concat"], "not searchable"),
    (["--tune-space", "model.encoders.image=cnn,resnet18"], "not searchable"),
    (["--tune-space", "model={dropout: 0.1}"], "not searchable"),
    (["--tune-space", "train.lr=-1,0.1"], "train.lr=-1"),
    (["--tune-space", "train.lrr=0.1"], "unknown config key 'train.lrr'"),
    (["--tune-space", "train.lr"], "expected KEY=V1,V2"),
    (["--tune-space", "model.dropout=0.1", "--tune-space", "model.dropout=0.2"], "given twice"),
    (["--tune", "--set", "data.val_fraction=0"], "validation split"),
])
def test_bad_searches_are_refused_before_any_training(toy_small, tmp_path, args, words):
    result = cli("compare", "unimodal:text", "--data", toy_small, "--epochs", "1", "--out",
                 tmp_path / "cmp", *args, check=False)
    assert result.returncode == 2, result.stdout + result.stderr
    assert words in result.stderr
    assert not list(tmp_path.glob("cmp/tune/*"))


def test_collect_and_job_refuse_tune_options(tuned):
    result = cli("compare", "--collect", tuned, "--tune", check=False)
    assert result.returncode == 2 and "drop --tune" in result.stderr
