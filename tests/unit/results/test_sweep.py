"""One sweep directory as read from disk (:mod:`bbvi_kit.results.sweep`): the points and runs of
``sweep.json``, the rows of ``summary.csv`` given to their points, the points recovered from
``summary.csv`` alone, runs found by folder when neither lists them, and an unreadable
``sweep.json`` noted rather than raised."""

from __future__ import annotations

import json
from pathlib import Path

from bbvi_kit.results.sweep import Sweep, load_sweep, looks_like_sweep


def make_run(path: Path, seed: int) -> None:
    path.mkdir(parents=True)
    (path / "run.json").write_text(json.dumps({"status": "completed", "seed": seed}))
    (path / "metrics.csv").write_text(f"step,loss\n1,{seed}\n")


def write_summary(path: Path, header: str, *rows: str) -> None:
    (path / "summary.csv").write_text("\n".join([header, *rows]) + "\n")


def two_point_sweep(path: Path) -> Path:
    for name, seed in [("p0-s0", 0), ("p0-s1", 1), ("p1-s0", 0)]:
        make_run(path / name, seed)
    info = {
        "points": [{"index": 0, "label": "K=1", "point": {"objective.num_particles": 1}},
                   {"index": 1, "label": "K=5", "point": {"objective.num_particles": 5}}],
        "runs": [{"dir": "p0-s0", "point_index": 0, "seed": 0}, {"dir": "p0-s1", "point_index": 0, "seed": 1},
                 {"dir": "p1-s0", "point_index": 1, "seed": 0}, {"dir": "p1-s1", "point_index": 1, "seed": 1}],
    }
    (path / "sweep.json").write_text(json.dumps(info))
    (path / "sweep.yaml").write_text("sweep:\n  objective.num_particles: [1, 5]\n")
    write_summary(path, "objective.num_particles,seed,final_loss,run_dir,error,warning",
                  "1,0,2.5,p0-s0,,", "1,1,3.5,p0-s1,,", "5,0,1.5,p1-s0,,")
    return path


def test_a_sweep_looks_like_one_with_either_file(tmp_path: Path) -> None:
    assert not looks_like_sweep(tmp_path)
    (tmp_path / "summary.csv").write_text("seed\n")
    assert looks_like_sweep(tmp_path)
    (tmp_path / "summary.csv").unlink()
    (tmp_path / "sweep.json").write_text("{}")
    assert looks_like_sweep(tmp_path)


def test_points_runs_and_summary_rows_come_from_sweep_json_and_summary_csv(tmp_path: Path) -> None:
    notes: list[str] = []
    sweep = load_sweep(two_point_sweep(tmp_path), notes)
    assert isinstance(sweep, Sweep) and notes == []
    assert sweep.text == "sweep:\n  objective.num_particles: [1, 5]\n"
    assert sweep.columns == ["objective.num_particles", "seed", "final_loss", "run_dir", "error", "warning"]
    assert sweep.rows[0] == {"objective.num_particles": "1", "seed": "0", "final_loss": "2.5", "run_dir": "p0-s0",
                             "error": "", "warning": ""}
    assert [(p.index, p.label, p.point) for p in sweep.points] == [(0, "K=1", {"objective.num_particles": 1}),
                                                                     (1, "K=5", {"objective.num_particles": 5})]
    assert sweep.points[0].dirs == ["p0-s0", "p0-s1"] and sweep.points[1].dirs == ["p1-s0", "p1-s1"]
    assert [r["final_loss"] for r in sweep.points[0].rows] == ["2.5", "3.5"]
    assert [r["final_loss"] for r in sweep.points[1].rows] == ["1.5"]
    # p1-s1 is listed but was never begun: no run for it
    assert [r.name for r in sweep.runs] == ["p0-s0", "p0-s1", "p1-s0"]
    assert [r.seed for r in sweep.runs] == [0, 1, 0]


def test_without_sweep_json_the_point_is_the_columns_before_seed(tmp_path: Path) -> None:
    for name in ("a", "b", "c"):
        make_run(tmp_path / name, 0)
    write_summary(tmp_path, "objective.num_particles,training.batch_size,seed,final_loss,run_dir",
                  "1,32,0,2.0,a", "5,32,0,1.0,b", "1,32,1,3.0,c")
    notes: list[str] = []
    sweep = load_sweep(tmp_path, notes)
    assert notes == [] and sweep.info == {}
    assert [(p.index, p.label) for p in sweep.points] == [
        (0, "objective.num_particles=1, training.batch_size=32"), (1, "objective.num_particles=5, training.batch_size=32")]
    assert sweep.points[0].point == {"objective.num_particles": "1", "training.batch_size": "32"}
    assert sweep.points[0].dirs == ["a", "c"] and sweep.points[1].dirs == ["b"]
    assert [len(p.rows) for p in sweep.points] == [2, 1]
    assert [r.name for r in sweep.runs] == ["a", "c", "b"]


def test_runs_summary_csv_knows_and_sweep_json_does_not_are_read_too(tmp_path: Path) -> None:
    make_run(tmp_path / "listed", 0)
    make_run(tmp_path / "extra", 1)
    (tmp_path / "sweep.json").write_text(json.dumps({"points": [{"index": 0, "label": "only", "point": {}}],
                                                     "runs": [{"dir": "listed", "point_index": 0}]}))
    write_summary(tmp_path, "seed,run_dir", "0,listed", "1,extra")
    sweep = load_sweep(tmp_path, [])
    assert [r.name for r in sweep.runs] == ["listed", "extra"]
    assert [r["run_dir"] for r in sweep.points[0].rows] == ["listed"]  # the extra row belongs to no point


def test_without_either_list_the_runs_are_the_run_folders_in_name_order(tmp_path: Path) -> None:
    make_run(tmp_path / "z", 1)
    make_run(tmp_path / "a", 2)
    (tmp_path / "not-a-run").mkdir()
    (tmp_path / "file.txt").write_text("x")
    sweep = load_sweep(tmp_path, [])
    assert sweep.points == [] and sweep.rows == [] and sweep.columns == [] and sweep.text == ""
    assert [r.name for r in sweep.runs] == ["a", "z"]


def test_an_unreadable_sweep_json_is_noted_and_the_rest_still_read(tmp_path: Path) -> None:
    make_run(tmp_path / "r", 0)
    (tmp_path / "sweep.json").write_text("{truncated")
    notes: list[str] = []
    sweep = load_sweep(tmp_path, notes)
    assert len(notes) == 1 and notes[0].startswith(str(tmp_path / "sweep.json")) and "\n" not in notes[0]
    assert sweep.info == {} and [r.name for r in sweep.runs] == ["r"]


def test_an_unreadable_run_is_noted_not_raised(tmp_path: Path) -> None:
    make_run(tmp_path / "r", 0)
    (tmp_path / "r" / "metrics.csv").write_text("step,loss\n1,x\n2,2\n")
    notes: list[str] = []
    sweep = load_sweep(tmp_path, notes)
    assert len(sweep.runs) == 1 and len(sweep.runs[0].metrics) == 0
    assert len(notes) == 1 and "metrics.csv" in notes[0]


def test_malformed_entries_of_sweep_json_are_skipped(tmp_path: Path) -> None:
    make_run(tmp_path / "r", 0)
    info = {"points": ["not a mapping", {"label": None, "point": None}, {"index": 7, "label": "x", "point": {"a": 1}}],
            "runs": ["nope", {"dir": "r", "point_index": 7}, {"dir": "ghost", "point_index": 3}]}
    (tmp_path / "sweep.json").write_text(json.dumps(info))
    sweep = load_sweep(tmp_path, [])
    # a point without an index takes its position in the list (1); a run of an unknown point is dropped
    assert [(p.index, p.label, p.point, p.dirs) for p in sweep.points] == [(1, "", {}, []), (7, "x", {"a": 1}, ["r"])]
    assert [r.name for r in sweep.runs] == ["r"]
