"""benchmarks/fid_minutes.py's minutes: the runs' summaries add up, a snapshot adds its second."""

import pytest

import benchmarks.fid_minutes as fm


@pytest.fixture
def train(tmp_path, monkeypatch):
    (tmp_path / "a_summary.txt").write_text("# cmd\nparams 1 steps 2 elapsed 270 s\n")
    (tmp_path / "b_summary.txt").write_text("params 1 steps 9 elapsed 840 s\n")
    monkeypatch.setattr(fm, "TRAIN", tmp_path)


def test_minutes(train):
    assert fm.minutes({}, None, 6.0) == 6.0  # given minutes win
    assert fm.minutes({"model": "runs/x/model16"}, "a", None) == 4.5
    assert fm.minutes({}, ("a", "b"), None) == pytest.approx(1110 / 60)  # no model named
    snap = {"model": "/w/runs/x/snapshots/s000420-step011482"}
    assert fm.minutes(snap, None, None) == 7.0  # a snapshot alone: its second
    assert fm.minutes(snap, ("a",), None) == pytest.approx(690 / 60)  # after the runs before
