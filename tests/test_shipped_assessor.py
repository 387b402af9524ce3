"""The study's primary assessor ships inside the package as arrays: it loads
without unpickling anything, and on the committed score tables it picks the
epochs the study's model picks (experiments/results/assessor_shipped_picks.csv,
written from experiments/results/assessor_selection.joblib by
experiments/export_assessor.py; the model itself: experiments/assessor_wide.py),
with bit-identical predictions where that pickle loads under this scikit-learn."""
import functools
import importlib.util
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dcjax import selection, shipped_assessor

RESULTS = Path(__file__).resolve().parent.parent / "experiments" / "results"
EVERY = 5   # every 5th committed table: 15 of 75 runs, all data sets and algorithms


@functools.lru_cache(maxsize=None)
def selection_study():
    spec = importlib.util.spec_from_file_location("selection_study", RESULTS.parent / "selection_study.py")
    study = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(study)
    return study


def read_run_csv(path):
    return selection_study().read_run_csv(path)


@pytest.fixture(scope="module")
def committed():
    """Features of a spread of the committed score tables."""
    paths = selection_study().study_tables()[::EVERY]   # not UNSEEN's: no assessor saw them
    return [selection.features(read_run_csv(p)[0]).reset_index(drop=True) for p in paths]


def test_the_shipped_file_is_arrays_and_loads_without_pickle():
    with np.load(shipped_assessor.SHIPPED, allow_pickle=False) as f:
        assert all(f[name].dtype != object for name in f.files)
    assessor = selection.load_assessor()            # the default: the shipped one
    assert assessor["target"] == "ensemble" and set(assessor["members"]) == {"rank", "gap"}
    assert all(isinstance(m["model"], shipped_assessor.TreeEnsemble) for m in assessor["members"].values())
    # the recipe fitted on the wider grid of issue 35 (experiments/assessor_wide.py): the per-seed study's
    # 75 tables, the 21 uneven subsamples and tables of round 1, 18 UNSEEN and 4 DECCS tables
    trained = assessor["trained_on"]
    assert len(trained) == len(selection_study().study_tables()) + 21 + 18 + 4
    assert sum("/uneven/" in r for r in trained) == 21 and sum("unseen_" in r for r in trained) == 18
    assert sum("/deccs/" in r for r in trained) == 4


def test_it_reproduces_the_studys_selections_on_the_committed_tables(committed):
    picks = pd.read_csv(RESULTS / "assessor_shipped_picks.csv")
    outcomes = pd.read_csv(RESULTS / "selection_outcomes.csv")
    study_pairs = outcomes[outcomes.selector == "assessor_gbr_lodo_ensemble_guarded"][["run", "seed"]]
    assert sorted(map(tuple, picks[["run", "seed"]].to_numpy())) == sorted(map(tuple, study_pairs.to_numpy()))
    shipped = selection.load_assessor()
    checked = 0
    for feats in committed:
        got = selection.select(feats, "assessor_guarded", shipped)
        expected = picks[picks.run == feats.attrs["run"]]
        assert got.epoch.tolist() == expected.epoch.tolist() and got.seed.tolist() == expected.seed.tolist()
        checked += len(got)
    assert checked >= 40


def test_its_predictions_equal_the_study_models_bit_for_bit(committed):
    import joblib
    import sklearn
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # a pickle of another scikit-learn version warns
        try:
            study = joblib.load(RESULTS / "assessor_selection.joblib")
        except Exception as e:   # noqa: BLE001 - exactly the case the arrays exist for
            pytest.skip(f"the study's pickle does not load cleanly under scikit-learn {sklearn.__version__}: {e}")
    shipped = selection.load_assessor()
    for feats in committed:
        for target, member in study["members"].items():
            x = selection.rank_features(feats, member["features"])
            np.testing.assert_array_equal(shipped["members"][target]["model"].predict(x), member["model"].predict(x))
