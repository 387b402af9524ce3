"""The study's primary assessor, shipped inside the package as plain arrays.

`python -m dcjax.select` and the estimators choose epochs with the assessor
that experiments/selection_study.py trains on every run of the study (the
rank + gap ensemble of gradient-boosted trees, `selection.train_assessor(...,
target='ensemble')`; used with its margin guard, `assessor_guarded`). A
joblib pickle of scikit-learn objects may not load under another
scikit-learn version, so the package ships the fitted trees themselves:
for every member, each tree's split features, thresholds, children and leaf
values, in one `.npz` read with `allow_pickle=False`. `TreeEnsemble.predict`
walks them as scikit-learn's `predict_stages` does (float32 inputs compared
with float64 thresholds, `learning_rate * leaf` added tree after tree), so it
gives the same numbers bit for bit under any scikit-learn version
(tests/test_shipped_assessor.py checks it against the study's model).

    to_file(assessor, path)   # what selection_study.py does after fitting
    load(path=SHIPPED)        # -> the assessor dict `selection` works with
"""
import json
from pathlib import Path
from typing import NamedTuple

import numpy as np

SHIPPED = Path(__file__).resolve().parent / "assessors" / "selection.npz"
LEAF = -1   # scikit-learn's marker of a leaf in children_left / children_right
FORMAT = 1


class TreeEnsemble(NamedTuple):
    """A fitted `GradientBoostingRegressor` (squared error) as arrays. The
    trees' nodes are concatenated; tree t owns nodes roots[t] .. roots[t+1]-1
    and its children indices are local to the tree."""
    init: float              # the constant first prediction (the training mean)
    learning_rate: float
    roots: np.ndarray        # (T + 1,) int64: offsets of each tree's nodes
    feature: np.ndarray      # (nodes,) int64, the split's input column
    threshold: np.ndarray    # (nodes,) float64: go left when x[feature] <= threshold
    left: np.ndarray         # (nodes,) int64, LEAF at leaves
    right: np.ndarray        # (nodes,) int64
    value: np.ndarray        # (nodes,) float64, the leaf's prediction

    def predict(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float32)    # scikit-learn's trees split float32 inputs
        rows = np.arange(len(x))
        out = np.full(len(x), self.init, np.float64)
        for t in range(len(self.roots) - 1):
            base = self.roots[t]
            node = np.zeros(len(x), np.int64)
            while True:
                left = self.left[base + node]
                inner = left != LEAF
                if not inner.any():
                    break
                go_left = x[rows, self.feature[base + node]] <= self.threshold[base + node]
                node = np.where(inner, np.where(go_left, left, self.right[base + node]), node)
            out += self.learning_rate * self.value[base + node]
        return out


def from_sklearn(model) -> TreeEnsemble:
    """The arrays of a fitted scikit-learn GradientBoostingRegressor."""
    trees = [est.tree_ for est in model.estimators_[:, 0]]
    init = float(model._raw_predict_init(np.zeros((1, model.n_features_in_)))[0, 0])
    return TreeEnsemble(
        init=init, learning_rate=float(model.learning_rate),
        roots=np.cumsum([0] + [t.node_count for t in trees]).astype(np.int64),
        feature=np.concatenate([t.feature for t in trees]).astype(np.int64),
        threshold=np.concatenate([t.threshold for t in trees]).astype(np.float64),
        left=np.concatenate([t.children_left for t in trees]).astype(np.int64),
        right=np.concatenate([t.children_right for t in trees]).astype(np.int64),
        value=np.concatenate([t.value.reshape(-1) for t in trees]).astype(np.float64))


def _members(assessor: dict) -> dict:
    return assessor["members"] if "members" in assessor else {assessor["target"]: assessor}


def to_file(assessor: dict, path) -> Path:
    """Write a gradient-boosting assessor (one model or an ensemble) as arrays."""
    path = Path(path)
    meta = {"format": FORMAT, "kind": assessor["kind"], "target": assessor["target"],
            "features": assessor["features"], "trained_on": assessor["trained_on"], "rows": assessor["rows"],
            "ensemble": "members" in assessor, "members": {}}
    arrays = {}
    for target, member in _members(assessor).items():
        if member["kind"] != "gbr":
            raise ValueError(f"only gradient-boosting assessors can be shipped, not {member['kind']!r}")
        trees = from_sklearn(member["model"])
        meta["members"][target] = {"features": member["features"], "init": trees.init,
                                   "learning_rate": trees.learning_rate}
        for field in ("roots", "feature", "threshold", "left", "right", "value"):
            arrays[f"{target}/{field}"] = getattr(trees, field)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, meta=np.array(json.dumps(meta)), **arrays)
    return path


def load(path=SHIPPED) -> dict:
    """The assessor dict of `selection` (members with a `model` that predicts)."""
    with np.load(path, allow_pickle=False) as f:
        meta = json.loads(str(f["meta"]))
        if meta.get("format") != FORMAT:
            raise ValueError(f"{path}: assessor file format {meta.get('format')}, this dcjax reads {FORMAT}")
        members = {}
        for target, m in meta["members"].items():
            model = TreeEnsemble(init=m["init"], learning_rate=m["learning_rate"],
                                 **{k: f[f"{target}/{k}"] for k in ("roots", "feature", "threshold",
                                                                     "left", "right", "value")})
            members[target] = {"model": model, "features": m["features"], "kind": "gbr", "target": target,
                               "trained_on": meta["trained_on"], "rows": meta["rows"]}
    if not meta["ensemble"]:
        return members[meta["target"]]
    return {"members": members, "features": meta["features"], "kind": meta["kind"], "target": meta["target"],
            "trained_on": meta["trained_on"], "rows": meta["rows"]}
