"""DDC-style explanations and tag supervision: the numbers of experiments/results/ddc.md.

    PYTHONPATH=. python experiments/ddc.py                       # all three parts, then ddc.md
    PYTHONPATH=. python experiments/ddc.py --part planted        # or wine, supervision; ddc.md from what exists

1. planted: `dcjax.explain.planted` partitions (4 clusters, each defined by 2
   tags in 90% of its members; 2 shared tags in 97% of everyone; 10 noise
   tags), 10 draws: does the ILP (with and without its tie-break) and top-2
   give exactly the planted tag sets? TC and ITF.
2. wine: DEC (the estimator, protocol defaults, 1 seed) with 3 clusters on
   scikit-learn's wine data; tags derived by 3 quantile bins per feature;
   explanations by the ILP (alpha 2) and top-3, TC, ITF, purity.
3. supervision: scikit-learn digits with the per-class attributes of
   experiments/data/digit_attributes.csv given to every image of its class
   (as AwA2 gives its 85 class attributes), DEC and DECCS, 5 seeds each, with
   nothing, the tag head (lambda_tag 0.5), DDC's pairwise loss (weight 1,
   0.1), both, and the tag head on tags derived from the pixels (3 quantile
   bins each: the tags a person without labels has). A smaller network and
   fewer epochs than the protocol (SUPERVISION below), so that the 12 runs
   fit in about half an hour on 2 shared CPU cores. Runs resume; a finished
   arm (summary.json) is read, not retrained.
"""
import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from dcjax import checkpointing, config as config_lib, explain, train

HERE = Path(__file__).parent
RESULTS = HERE / "results"
ATTRIBUTES = HERE / "data" / "digit_attributes.csv"

# Per-class attributes of the printed digits 0-9, one row per class: my reading
# of each glyph's shape (as AwA's attributes are people's reading of each animal).
DIGIT_ATTRIBUTES = pd.DataFrame({
    #                0  1  2  3  4  5  6  7  8  9
    "closed loop":  [1, 0, 0, 0, 1, 0, 1, 0, 1, 1],
    "two loops":    [0, 0, 0, 0, 0, 0, 0, 0, 1, 0],
    "vertical stroke": [0, 1, 0, 0, 1, 1, 0, 0, 0, 1],
    "horizontal stroke": [0, 0, 1, 0, 1, 1, 0, 1, 0, 0],
    "diagonal stroke": [0, 0, 1, 0, 0, 0, 0, 1, 0, 0],
    "curve at the top": [1, 0, 1, 1, 0, 0, 1, 0, 1, 1],
    "curve at the bottom": [1, 0, 0, 1, 0, 1, 1, 0, 1, 0],
    "strokes cross": [0, 0, 0, 0, 1, 0, 0, 0, 1, 0],
    "open to the left": [0, 0, 0, 1, 0, 0, 0, 0, 0, 0],
    "mirror symmetric": [1, 1, 0, 0, 0, 0, 0, 0, 1, 0],
}, index=pd.RangeIndex(10, name="digit"))

SUPERVISION = dict(hidden_dims=(128, 128, 256), pretrain_epochs=30, dec_epochs=30, deccs_steps_per_round=100)
# label: (run folder suffix, config fields, the arm whose DEC run pretrained its autoencoder: the
# pretraining depends only on the tag head and its tags; None: this arm's DEC run pretrains)
ARMS = {"none": ("none", {}, None),
        "tag head (λ_tag 0.5)": ("tag", {"tags.weight": 0.5}, None),
        "pairwise (weight 1)": ("pairwise", {"tags.pairwise_weight": 1.0}, "none"),
        "pairwise (weight 0.1)": ("pairwise01", {"tags.pairwise_weight": 0.1}, "none"),
        "tag head + pairwise (weight 1)": ("tag_pairwise", {"tags.weight": 0.5, "tags.pairwise_weight": 1.0}, "tag"),
        # tags a person without labels would have: bins of the features themselves
        "tag head on derived pixel bins (λ_tag 0.5)": ("derived", {"tags.weight": 0.5, "tags.file": "derived"}, None)}


# ---------------------------------------------------------------- 1. planted

def planted_part(draws: int = 10) -> dict:
    rows = []
    for seed in range(draws):
        labels, tags, names, planted = explain.planted(seed=seed)
        want = {c: sorted(v) for c, v in planted.items()}
        _, _, q = explain.cluster_frequencies(labels, tags)
        for method, w in (("ilp", explain.ilp_explanations(q, 1.6)[0]),
                          ("ilp, DDC's program alone (no tie-break)", explain.ilp_explanations(q, 1.6, tie_break=False)[0]),
                          ("top-2", explain.topk_explanations(q, 2))):
            got = {c: sorted(np.asarray(names)[w[c]]) for c in range(len(w))}
            rows.append(dict(draw=seed, method=method, recovered=got == want,
                             clusters_recovered=sum(got[c] == want[c] for c in want),
                             tc=float(np.mean(explain.tag_coverage(w, q))),
                             itf=float(np.mean(explain.inverse_tag_frequency(w)))))
    example = explain.explain(*explain.planted(seed=0)[:3], alpha=1.6, top_k=2)
    return {"rows": rows, "example": explain.explanation_table(example).to_dict("records")}


# ---------------------------------------------------------------- 2. wine

def wine_part() -> dict:
    from sklearn.datasets import load_wine
    from sklearn.metrics import normalized_mutual_info_score

    from dcjax import DEC, metrics

    wine = load_wine(as_frame=True)
    t0 = time.time()
    model = DEC(n_clusters=3, random_state=0, progress=False).fit(wine.data)
    df = model.explain(X=wine.data, y=wine.target, alpha=2, top_k=3)
    acc = float(metrics.cluster_accuracy(wine.target.to_numpy(), model.labels_, 3))
    return {"seconds": time.time() - t0, "beta": df.attrs["beta"], "acc": acc,
            "nmi": float(normalized_mutual_info_score(wine.target, model.labels_)),
            "summary": explain.summary(df).reset_index().to_dict("records"),
            "table": explain.explanation_table(df).to_dict("records"),
            "top_mi": (df.drop_duplicates("tag").nlargest(5, "mutual_information")[["tag", "mutual_information"]]
                       .to_dict("records"))}


# ---------------------------------------------------------------- 3. supervision

def digit_tags(runs: Path) -> Path:
    """Every digit image gets its class's attributes: (1797, 10) in runs/."""
    from sklearn.datasets import load_digits

    ATTRIBUTES.parent.mkdir(exist_ok=True)
    DIGIT_ATTRIBUTES.to_csv(ATTRIBUTES)
    y = load_digits().target
    path = runs / "digit_tags.csv"
    DIGIT_ATTRIBUTES.iloc[y].to_csv(path, index=False)
    derived, names = explain.derive_tags(load_digits().data, [f"pixel {j}" for j in range(64)])
    np.savez(runs / "digit_derived_tags.npz", tags=derived, names=np.array(names))
    return path


def arm_config(algorithm: str, arm: dict, seeds: int, tags: Path, pretrained_from: str):
    c = config_lib.make_config(algorithm, "digits")
    c.seeds, c.progress = seeds, False
    c.model.hidden_dims = SUPERVISION["hidden_dims"]
    c.pretrain.epochs = SUPERVISION["pretrain_epochs"]
    if algorithm == "dec":
        c.clustering.epochs = SUPERVISION["dec_epochs"]
    else:
        c.deccs.steps_per_round = SUPERVISION["deccs_steps_per_round"]
    c.tags.file = str(tags)
    for field, value in arm.items():
        if field == "tags.file":
            value = str(Path(tags).parent / "digit_derived_tags.npz")
        section, name = field.split(".")
        c[section][name] = value
    c.pretrained_from = pretrained_from
    return c


def supervision_part(runs: Path, seeds: int) -> dict:
    runs.mkdir(parents=True, exist_ok=True)
    tags_path = digit_tags(runs)
    tag_values, names = explain.load_tags(tags_path)
    out = {}
    for algorithm in ("dec", "deccs"):
        for arm, (folder, fields, pretrained) in ARMS.items():
            workdir = runs / f"{algorithm}_{folder}"
            # one pretraining per kind of autoencoder: a DEC arm trains it, the others start from it
            source = "" if algorithm == "dec" and pretrained is None else str(runs / f"dec_{pretrained or folder}")
            c = arm_config(algorithm, fields, seeds, tags_path, source)
            if not (workdir / "summary.json").exists():
                t0 = time.time()
                train.train_and_evaluate(c, workdir)
                print(f"{workdir}: {time.time() - t0:.0f} s", flush=True)
            summary = json.loads((workdir / "summary.json").read_text())
            final = max(checkpointing.list_epochs(workdir, "clustering"))
            labels = np.asarray(checkpointing.load_snapshot(workdir, final)["assignments"])
            expl = [explain.summary(explain.explain(lab, tag_values, names, alpha=1.0, top_k=2)) for lab in labels]
            records = [r for r in checkpointing.load_records(workdir, "clustering") if "loss" in r]
            bce = [np.mean(records[i]["loss"]["tags"]) for i in (0, -1)] if "tags" in records[-1]["loss"] else None
            out[f"{algorithm}|{arm}"] = {
                "largest_cluster": [max(s["cluster_sizes"]) / sum(s["cluster_sizes"]) for s in summary["seeds"]],
                "tags_bce_first_last_epoch": bce,
                "acc": [s["algorithm"]["acc"] for s in summary["seeds"]],
                "nmi": [s["algorithm"]["nmi"] for s in summary["seeds"]],
                "ilp_tc": [float(e.loc["ilp", "tc"]) for e in expl], "ilp_itf": [float(e.loc["ilp", "itf"]) for e in expl],
                "tags_per_cluster": [float(e.loc["ilp", "tags"]) for e in expl]}
    return out


# ---------------------------------------------------------------- the page

def _ms(values, scale=100.0, digits=1) -> str:
    v = np.asarray(values, float) * scale
    return f"{v.mean():.{digits}f} ± {v.std():.{digits}f}"


def write_markdown(command: str) -> str:
    lines = ["# DDC-style explanations and tag supervision", "",
             f"Generated by `{command}` (experiments/ddc.py); every number below comes from it. "
             "Definitions: docs/ddc.md.", ""]
    path = RESULTS / "ddc_planted.json"
    if path.exists():
        part = json.loads(path.read_text())
        rows = pd.DataFrame(part["rows"])
        lines += ["## 1. Planted explanations", "",
                  "`dcjax.explain.planted`: 4 clusters of 100, each defined by 2 tags of its own (in 90% of its "
                  "members, 5% of the others), 2 shared tags (97% of everyone: commoner than any cluster's own), "
                  "10 noise tags (20%). ILP: alpha 1.6, beta the smallest feasible (DDC's step of 1); top-2: each "
                  f"cluster's 2 commonest tags. {rows.draw.nunique()} draws.", "",
                  "| method | draws with every planted set exact | clusters exact (of 4, mean) | TC | ITF (max ln 4 = 1.386) |",
                  "|---|---|---|---|---|"]
        for method, g in rows.groupby("method", sort=False):
            lines.append(f"| {method} | {int(g.recovered.sum())} / {len(g)} | {g.clusters_recovered.mean():.1f} | "
                         f"{g.tc.mean():.3f} | {g.itf.mean():.3f} |")
        lines += ["", "Draw 0's explanations:", "", "| method | cluster | tags (share of members) | TC | ITF |",
                  "|---|---|---|---|---|"]
        lines += [f"| {r['method']} | {r['cluster']} | {r['tags']} | {r['tc']:.3f} | {r['itf']:.3f} |"
                  for r in part["example"]]
        lines.append("")
    path = RESULTS / "ddc_wine.json"
    if path.exists():
        part = json.loads(path.read_text())
        lines += ["## 2. Your own table: wine, DEC with 3 clusters", "",
                  "`DEC(n_clusters=3, random_state=0).fit(wine.data)` (the protocol's defaults, one seed, the "
                  "label-free choice of epoch), then `model.explain(X=wine.data, y=wine.target, alpha=2, top_k=3)`: "
                  "tags are 3 quantile bins of each of the 13 features (39 tags). "
                  f"The partition's NMI with the cultivars: {part['nmi']:.3f}"
                  + (f", ACC {part['acc']:.3f}" if part.get("acc") is not None else "")
                  + f". ILP beta: {part['beta']:g}. Training and explaining took {part['seconds']:.0f} s.", "",
                  "| method | TC | ITF (max ln 3 = 1.099) | tags per cluster | purity |", "|---|---|---|---|---|"]
        lines += [f"| {r['method']} | {r['tc']:.3f} | {r['itf']:.3f} | {r['tags']:.1f} | {r['purity']:.3f} |"
                  for r in part["summary"]]
        lines += ["", "| method | cluster | size | tags (share of members) | TC | ITF | purity |",
                  "|---|---|---|---|---|---|---|"]
        lines += [f"| {r['method']} | {r['cluster']} | {r['size']} | {r['tags']} | {r['tc']:.3f} | {r['itf']:.3f} | "
                  f"{r['purity']:.3f} |" for r in part["table"]]
        lines += ["", "Tags with the most mutual information with the partition (nats): "
                  + ", ".join(f"{r['tag']} {r['mutual_information']:.3f}" for r in part["top_mi"]) + ".", ""]
    path = RESULTS / "ddc_supervision.json"
    if path.exists():
        part = json.loads(path.read_text())
        lines += ["## 3. Tag supervision on digits with per-class attributes", "",
                  f"scikit-learn digits (1797 images, 10 classes), tags: experiments/data/digit_attributes.csv "
                  "(10 attributes per class) given to every image of its class. Smaller than the protocol: "
                  f"autoencoder 64-{'-'.join(map(str, SUPERVISION['hidden_dims']))}-10, "
                  f"{SUPERVISION['pretrain_epochs']} pretraining epochs, DEC {SUPERVISION['dec_epochs']} "
                  f"clustering epochs, DECCS 11 rounds of {SUPERVISION['deccs_steps_per_round']} steps. "
                  "Final epoch, 5 seeds (0-4), mean ± sd. The arms that share a kind of autoencoder share its "
                  "pretraining per seed (`pretrained_from` a DEC run: none and pairwise; tag head, tag head + "
                  "pairwise and DECCS + tag head). 'Derived pixel bins': instead of the attributes, the tag head "
                  "learns `explain.derive_tags` of the 64 pixels (3 quantile bins each, fewer where a pixel has "
                  "few values; 143 tags), the only tags a table without labels has. DECCS has no soft "
                  "assignments, so its pairwise loss pulls the pairs' embeddings together (docs/ddc.md). "
                  "TC/ITF: the ILP's explanation (alpha 1) of each seed's final partition by the attributes.", "",
                  "| algorithm | tags | ACC % | NMI % | largest cluster % (worst seed) | tag BCE, first → last clustering epoch | TC | ITF (max ln 10 = 2.303) | tags per cluster |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for key, r in part.items():
            algorithm, arm = key.split("|")
            bce = r.get("tags_bce_first_last_epoch")
            lines.append(f"| {algorithm.upper()} | {arm} | {_ms(r['acc'])} | {_ms(r['nmi'])} | "
                         f"{100 * max(r['largest_cluster']):.0f} | "
                         + ("–" if not bce else f"{bce[0]:.3f} → {bce[1]:.3f}") + " | "
                         f"{_ms(r['ilp_tc'], 1, 3)} | {_ms(r['ilp_itf'], 1, 3)} | {_ms(r['tags_per_cluster'], 1, 1)} |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--part", choices=["all", "planted", "wine", "supervision", "page"], default="all")
    ap.add_argument("--runs", default="runs/ddc")
    ap.add_argument("--seeds", type=int, default=5)
    args = ap.parse_args(argv)
    RESULTS.mkdir(exist_ok=True)
    if args.part in ("all", "planted"):
        (RESULTS / "ddc_planted.json").write_text(json.dumps(planted_part(), indent=1))
    if args.part in ("all", "wine"):
        (RESULTS / "ddc_wine.json").write_text(json.dumps(wine_part(), indent=1))
    if args.part in ("all", "supervision"):
        (RESULTS / "ddc_supervision.json").write_text(json.dumps(supervision_part(Path(args.runs), args.seeds),
                                                                 indent=1))
    page = write_markdown("PYTHONPATH=. python experiments/ddc.py")
    notes = ""
    old = (RESULTS / "ddc.md").read_text() if (RESULTS / "ddc.md").exists() else ""
    if "## Notes (hand-written)" in old:
        notes = "\n" + old[old.index("## Notes (hand-written)"):]
    (RESULTS / "ddc.md").write_text(page + notes)
    print(page)


if __name__ == "__main__":
    main()
