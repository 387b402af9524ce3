"""DECCS on the benchmark sets: does the consensus representation make the
ensemble agree more, and its members better?

    python experiments/deccs_study.py --datasets digits optdigits --seeds 5 [--runs runs/deccs]
        [--pretrained-from optdigits=runs/ae_kmeans_optdigits ...]

Per data set, one DECCS run of `--seeds` seeds (dcjax/methods/deccs.py, the
config in configs/deccs_<name>.py), resumed where it stopped. Its clustering
epoch 0 is AE+k-means on the same pretrained autoencoders. Per seed, read
from the run:

- the agreement (mean pairwise NMI among the members) of the first round (on
  the pretrained embedding, epoch 1) and of the last round that ran (on the
  final embedding), and how many rounds ran before the stopping rule;
- each member's ACC/NMI/ARI in those two rounds (the round's partition of
  every row: the member's classifier's predictions);
- DECCS's consensus, AE+k-means (clustering epoch 0), and k-means on the
  final embedding.

Rows go to experiments/results/deccs_seeds.csv as each seed is done; the
tables to experiments/results/deccs.md (its hand-written notes are kept).
"""
import argparse
import json
import time
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pandas as pd
from sklearn.cluster import KMeans

from dcjax import checkpointing, config as config_lib, data, metrics, train
from dcjax.methods import deccs
from protocol import write_report

RESULTS = Path(__file__).parent / "results"
ROWS = RESULTS / "deccs_seeds.csv"


def scores(y, labels, k) -> dict:
    s = metrics.label_based_scores(jnp.asarray(y), jnp.asarray(labels), k, n_classes=int(y.max()) + 1)
    return {name: float(v) for name, v in s.items()}


def train_run(dataset: str, seeds: int, runs: Path, pretrained_from: str = "") -> Path:
    """`pretrained_from`: a finished run with the same data, model and
    pretraining settings and these seeds, whose autoencoders DECCS starts
    from (its 100 pretraining epochs are skipped; the same network either way)."""
    workdir = runs / dataset
    cfg = config_lib.make_config("deccs", dataset)
    cfg.seeds, cfg.progress = seeds, False
    if pretrained_from:
        other = checkpointing.load_config(pretrained_from)
        if train.changed_settings(json.loads(other.pretrain.to_json()), json.loads(cfg.pretrain.to_json())):
            raise ValueError(f"{pretrained_from}: its pretraining settings differ from DECCS's")
        cfg.pretrained_from = str(pretrained_from)
    if not (workdir / "summary.json").exists():
        t0 = time.time()
        train.train_and_evaluate(cfg, workdir)
        print(f"{dataset}: trained in {time.time() - t0:.0f} s", flush=True)
    return workdir


def seed_rows(workdir: Path, dataset: str) -> list[dict]:
    """One row per seed x partition (see the module docstring)."""
    config = checkpointing.load_config(workdir)
    ds = data.load_dataset(config.dataset)
    k = int(config.dataset.n_clusters) or ds.n_clusters
    snaps = [checkpointing.load_snapshot(workdir, e) for e in checkpointing.list_epochs(workdir)]
    rows = []
    for i, seed in enumerate(train.seed_ids(config)):
        rounds = int(snaps[-1]["rounds"][i])
        first, last = snaps[1], snaps[rounds]      # round r is epoch r's snapshot
        common = {"dataset": dataset, "seed": seed, "pretrained_from": config.pretrained_from, "rounds": rounds, "stopped": bool(snaps[-1]["stopped"][i]),
                  "agreement_first_round": float(first["agreement"][i]),
                  "agreement_last_round": float(last["agreement"][i])}

        def row(partition, embedding, labels):
            return {**common, "partition": partition, "embedding": embedding, **scores(ds.y, labels, k)}
        rows.append(row("ae_kmeans", "pretrained", snaps[0]["assignments"][i]))
        for embedding, snap in (("pretrained", first), ("final", last)):
            for m, name in enumerate(deccs.MEMBERS):
                rows.append(row(name, embedding, snap["member_assignments"][i, m]))
        rows.append(row("consensus", "final", last["assignments"][i]))
        z_final = np.asarray(last["embedding"][i], np.float64)
        rows.append(row("kmeans_final", "final", KMeans(n_clusters=k, n_init=int(config.kmeans.n_init),
                                                        random_state=seed).fit_predict(z_final)))
        print(f"{dataset} seed {seed}: agreement {common['agreement_first_round']:.3f} -> "
              f"{common['agreement_last_round']:.3f} in {rounds} rounds", flush=True)
    return rows


def pm(values) -> str:
    values = np.asarray(values, np.float64)
    return f"{100 * values.mean():.1f} ± {100 * values.std():.1f}" if len(values) else ""


LABELS = {"ae_kmeans": "AE+k-means", **{m: f"member: {m}" for m in deccs.MEMBERS},
          "consensus": "DECCS consensus (most agreeing member)",
          "kmeans_final": "k-means (10 starts) on the whole final embedding"}


def write_tables(table: pd.DataFrame):
    lines = ["# DECCS: consensus representations (experiments/deccs_study.py)", "",
             "ACC / NMI / ARI in %, mean ± sd over seeds. *pretrained*: DECCS's first round, on the "
             "pretrained embedding; *final*: its last round, on the final embedding. A member's partition is "
             "the round's (a sample clustered by the member, then the member's linear classifier predicts "
             "every row). Agreement: mean pairwise NMI among the four members on the round's sample (in %). "
             "AE+k-means: k-means (10 starts) on the whole pretrained embedding of the same autoencoders "
             "(DECCS's clustering epoch 0). Rounds: how many ran before the stopping rule (round 1 clusters "
             "the pretrained embedding; each later one follows a representation update).", ""]
    for dataset, d in table.groupby("dataset", sort=False):
        per_seed = d[d.partition == "ae_kmeans"]
        source = per_seed.pretrained_from.fillna("").iloc[0] if "pretrained_from" in per_seed else ""
        lines += [f"## {dataset} ({len(per_seed)} seeds)", "",
                  "- autoencoders: " + (f"those of `{source}` (the same data, model, pretraining settings and "
                                        "seeds; its 100 pretraining epochs reused, not rerun)" if source
                                        else "pretrained in this run (100 epochs)"),
                  f"- agreement: first round {pm(per_seed.agreement_first_round)}, last round "
                  f"{pm(per_seed.agreement_last_round)}",
                  f"- rounds per seed: {', '.join(map(str, per_seed.rounds))} "
                  f"({int(per_seed.stopped.sum())} of {len(per_seed)} stopped by the rule)", "",
                  "| partition | " + " | ".join(f"{c} {m}" for c in ("pretrained", "final")
                                                 for m in ("ACC", "NMI", "ARI")) + " |",
                  "|---" * 7 + "|"]
        for partition, label in LABELS.items():
            cells = [pm(d[(d.partition == partition) & (d.embedding == column)][metric])
                     for column in ("pretrained", "final") for metric in ("acc", "nmi", "ari")]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("")
    write_report(RESULTS / "deccs.md", lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", nargs="+", default=["digits", "optdigits", "usps", "pendigits"])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--runs", default="runs/deccs")
    ap.add_argument("--report-only", action="store_true", help="tables from deccs_seeds.csv only")
    ap.add_argument("--pretrained-from", nargs="*", default=[], metavar="DATASET=WORKDIR",
                    help="reuse the pretrained autoencoders of a protocol-identical finished run")
    args = ap.parse_args()
    pretrained = dict(item.split("=", 1) for item in args.pretrained_from)
    table = pd.read_csv(ROWS) if ROWS.exists() else pd.DataFrame()
    if not args.report_only:
        for dataset in args.datasets:
            if len(table) and dataset in set(table.dataset):
                continue
            workdir = train_run(dataset, args.seeds, Path(args.runs), pretrained.get(dataset, ""))
            table = pd.concat([table, pd.DataFrame(seed_rows(workdir, dataset))], ignore_index=True)
            table.to_csv(ROWS, index=False, float_format="%.5g")
            (RESULTS / "deccs_summary.json").write_text(json.dumps(
                {d: json.loads((Path(args.runs) / d / "summary.json").read_text())
                 for d in table.dataset.unique() if (Path(args.runs) / d / "summary.json").exists()}, indent=1))
    write_tables(table)


if __name__ == "__main__":
    main()
