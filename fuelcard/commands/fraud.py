"""`fuelcard fraud backtest|report`: evaluate the fraud model on any transaction file (CONTRACTS.md)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer

from fuelcard.commands.common import CliError, parse_day, read_table, write_table_atomic

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Fraud model: backtest on any transaction file, report.")

REQUIRED = ("tx_id", "ts", "card_id", "station_id", "amount", "is_fraud")


def _write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


@app.command("backtest")
def backtest_cmd(
    transactions: Annotated[Path, typer.Option("--transactions", help="CSV or Parquet with tx_id, ts, card_id, "
                                               "station_id, amount, is_fraud (+ any optional column)")],
    train_start: Annotated[str, typer.Option("--train-start", help="First train day (YYYY-MM-DD, UTC)")],
    train_end: Annotated[str, typer.Option("--train-end", help="Last train day (inclusive)")],
    test_start: Annotated[str, typer.Option("--test-start", help="First test day")],
    test_end: Annotated[str, typer.Option("--test-end", help="Last test day (inclusive)")],
    label_delay_days: Annotated[float, typer.Option("--label-delay-days", help="Days before a label is known")],
    out: Annotated[Path, typer.Option("--out", help="Output CSV: tx_id,score for every test transaction")],
    seed: Annotated[int, typer.Option("--seed", help="Random seed")] = 7,
    target_fpr: Annotated[float, typer.Option("--target-fpr", help="False-positive rate for the review "
                                              "threshold")] = 0.003,
    tz_offset_hours: Annotated[float, typer.Option("--tz-offset-hours", help="Local time = UTC + this, for "
                                                   "hour-of-day features")] = 8.0,
    master_data: Annotated[bool, typer.Option("--master-data/--no-master-data", help="Join cards/vehicles/"
                                              "fleets.parquet found next to the transactions file")] = True,
    report: Annotated[Path | None, typer.Option("--report", help="Also write the metrics report into this "
                                                "directory")] = None,
) -> None:
    """Train on the train window (labels at least N days older than the test start), score the test window."""
    from models.fraud.train import TransactionsError, attach_master_data, backtest, prepare_transactions

    days = {name: parse_day(v, name=flag) for name, v, flag in (
        ("train_start", train_start, "--train-start"), ("train_end", train_end, "--train-end"),
        ("test_start", test_start, "--test-start"), ("test_end", test_end, "--test-end"))}
    if label_delay_days < 0 or label_delay_days != label_delay_days:
        raise CliError("--label-delay-days must be >= 0")
    if not 0 < target_fpr < 1:
        raise CliError("--target-fpr must be between 0 and 1")
    raw = read_table(transactions, required=REQUIRED, name="--transactions")
    try:
        df = prepare_transactions(raw)
        if master_data:
            df = attach_master_data(df, transactions.resolve().parent)
        res = backtest(df, **days, label_delay_days=label_delay_days, seed=seed, target_fpr=target_fpr,
                       tz_offset_hours=tz_offset_hours, prepared=True)
    except TransactionsError as exc:
        raise CliError(f"--transactions: {exc}") from None
    meta = {**res.info, "n_trees": len(res.model.trees), "metadata": res.model.metadata}
    write_table_atomic(res.scores, out)
    _write_text_atomic(Path(f"{out}.meta.json"), json.dumps(meta, indent=2, default=str))
    typer.echo(f"scored {len(res.scores):,} test transactions -> {out} (trained on {res.info['train_rows']:,} "
               f"labelled rows, {res.info['train_frauds']:,} frauds, {len(res.info['features'])} features)")
    if report is not None:
        test = res.test.copy()
        if "scenario" in raw.columns:
            test = test.merge(raw[["tx_id", "scenario"]].astype({"tx_id": str}), on="tx_id", how="left")
        text = write_report(test, res.scores["score"].to_numpy(), report,
                            review_threshold=res.model.review_threshold,
                            decline_threshold=res.model.decline_threshold, source=str(transactions))
        typer.echo(text)


@app.command("report")
def report_cmd(
    transactions: Annotated[Path, typer.Option("--transactions", help="The transaction file (labels, amounts, "
                                               "optional scenario column)")],
    scores: Annotated[Path, typer.Option("--scores", help="tx_id,score (from fraud backtest)")],
    out: Annotated[Path, typer.Option("--out", help="Directory for fraud_report.txt, metrics.json and PNGs")],
    meta: Annotated[Path | None, typer.Option("--meta", help="Backtest metadata with thresholds (default: "
                                              "SCORES.meta.json when present)")] = None,
    review_threshold: Annotated[float | None, typer.Option("--review-threshold")] = None,
    decline_threshold: Annotated[float | None, typer.Option("--decline-threshold")] = None,
    target_fpr: Annotated[float, typer.Option("--target-fpr", help="Used only when no thresholds are "
                                              "known: thresholds at this FPR on the scored rows")] = 0.003,
) -> None:
    """Metrics report (text + PNG): AUC ROC, AP, CP@100, FPR/recall at thresholds, per-scenario recall."""
    import numpy as np

    from models.fraud.train import TransactionsError, prepare_transactions, threshold_for_fpr

    raw = read_table(transactions, required=REQUIRED, name="--transactions")
    sc = read_table(scores, required=("tx_id", "score"), name="--scores")
    try:
        df = prepare_transactions(raw)
    except TransactionsError as exc:
        raise CliError(f"--transactions: {exc}") from None
    if "scenario" in raw.columns:
        df["scenario"] = raw["scenario"].to_numpy()
    sc = sc.assign(tx_id=sc["tx_id"].astype(str))
    test = df.merge(sc[["tx_id", "score"]], on="tx_id", how="inner")
    if test.empty:
        raise CliError("--scores: no tx_id matches the transaction file")
    s = test["score"].to_numpy(dtype=float)
    if np.isnan(s).any():
        raise CliError("--scores: score column has empty values")
    meta_path = meta or Path(f"{scores}.meta.json")
    info: dict[str, Any] = {}
    if meta_path.exists():
        try:
            info = json.loads(meta_path.read_text())
        except ValueError:
            raise CliError(f"--meta: {meta_path} is not JSON") from None
    y = test["is_fraud"].to_numpy(dtype=float)
    legit = s[y == 0]
    rt = review_threshold if review_threshold is not None else info.get("review_threshold")
    dt = decline_threshold if decline_threshold is not None else info.get("decline_threshold")
    note = ""
    if rt is None:
        rt = threshold_for_fpr(legit, target_fpr)
        note = f"(thresholds chosen on these scores at FPR {target_fpr:g}: optimistic)"
    if dt is None:
        dt = max(float(rt), threshold_for_fpr(legit, target_fpr / 10))
    text = write_report(test.drop(columns=["score"]), s, out, review_threshold=float(rt),
                        decline_threshold=float(dt), source=str(transactions), note=note)
    typer.echo(text)


def write_report(test: Any, scores: Any, out: Path, *, review_threshold: float, decline_threshold: float,
                 source: str = "", note: str = "") -> str:
    """Write fraud_report.txt, metrics.json, pr_curve.png, roc_curve.png and score_distributions.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from sklearn.metrics import precision_recall_curve, roc_curve

    from models.fraud.metrics import summarize

    out.mkdir(parents=True, exist_ok=True)
    m = summarize(test, scores, review_threshold=review_threshold, decline_threshold=decline_threshold)
    lines = [f"Fraud model report  {source}", note] if note else [f"Fraud model report  {source}"]
    lines += [
        f"transactions scored: {m['rows']:,}   labelled: {m['labelled']:,}   frauds: {m['frauds']:,}",
        f"AUC ROC: {m['auc_roc']:.4f}   average precision: {m['average_precision']:.4f}   "
        f"CP@100: {m['cp_at_100']:.4f}",
    ]
    for band in ("review", "decline"):
        r = m[band]
        amt = f"   fraud amount caught {r['amount_recall']:.1%}" if "amount_recall" in r else ""
        lines.append(f"{band:>7} threshold {r['threshold']:.4f}: FPR {r['fpr']:.4%}   recall {r['recall']:.1%}   "
                     f"flagged {r['flagged']:,}{amt}")
    if m.get("recall_by_scenario"):
        lines.append("recall by scenario (at the review threshold):")
        for name, r in m["recall_by_scenario"].items():
            lines.append(f"  {name:<22} {r['recall']:6.1%}  of {r['frauds']:,}")
    text = "\n".join(lines)
    y = test["is_fraud"].to_numpy(dtype=float)
    ok = ~np.isnan(y)
    y, s = y[ok], np.asarray(scores, dtype=float)[ok]
    if 0 < y.sum() < len(y):
        p, r, _ = precision_recall_curve(y, s)
        fig, ax = plt.subplots(figsize=(6, 4.5))
        ax.plot(r, p)
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.set_title(f"Precision-recall (AP {m['average_precision']:.3f})")
        fig.tight_layout()
        fig.savefig(out / "pr_curve.png", dpi=110)
        plt.close(fig)
        fpr, tpr, _ = roc_curve(y, s)
        fig, ax = plt.subplots(figsize=(6, 4.5))
        ax.plot(fpr, tpr)
        ax.axvline(0.003, color="grey", ls="--", lw=0.8)
        ax.set_xscale("log")
        ax.set_xlim(1e-5, 1)
        ax.set_xlabel("false-positive rate (log)")
        ax.set_ylabel("recall")
        ax.set_title(f"ROC (AUC {m['auc_roc']:.4f})")
        fig.tight_layout()
        fig.savefig(out / "roc_curve.png", dpi=110)
        plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 4.5))
    bins = np.linspace(0, 1, 51)
    ax.hist(s[y == 0], bins=bins, alpha=0.6, label="genuine", density=True, log=True)
    if y.sum():
        ax.hist(s[y == 1], bins=bins, alpha=0.6, label="fraud", density=True, log=True)
    for thr, name in ((review_threshold, "review"), (decline_threshold, "decline")):
        ax.axvline(thr, color="k", ls="--", lw=0.8)
        ax.text(thr, ax.get_ylim()[1], name, rotation=90, va="top", fontsize=8)
    ax.set_xlabel("score")
    ax.set_title("Score distributions")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "score_distributions.png", dpi=110)
    plt.close(fig)
    _write_text_atomic(out / "fraud_report.txt", text + "\n")
    _write_text_atomic(out / "metrics.json", json.dumps(m, indent=2, default=float))
    return text
