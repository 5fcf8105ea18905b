"""Writes the analyst notebooks (``python notebooks/build_notebooks.py``); ``tests/test_notebooks.py`` executes them.

The notebooks import the project's code and hold no logic of their own: each cell loads data, calls a
function of ``fuelcard``/``models``/``warehouse`` and shows the result. They read the simulator output named by
``FUELCARD_NOTEBOOK_DATA`` (a ``fuelcard simulate --out DIR`` directory); without it they simulate a small
network first. Outputs are not committed (the test executes them fresh).
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).parent

SETUP = '''\
%matplotlib inline
import os
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from fuelcard.simulator.config import SimConfig
from fuelcard.simulator.core import simulate
from fuelcard.simulator.io import write

pd.set_option("display.width", 160)
DATA = os.environ.get("FUELCARD_NOTEBOOK_DATA")
if DATA is None:  # no data given: simulate a small network (fuelcard simulate --out DIR does the same)
    DATA = write(simulate(SimConfig(seed=7, days=210, stations=12, members=400)), Path(tempfile.mkdtemp()) / "sim")
DATA = Path(DATA)
WORK = Path(tempfile.mkdtemp(prefix="notebook-"))


def read(name: str) -> pd.DataFrame:
    return pd.read_parquet(DATA / f"{name}.parquet")


print("data:", DATA)'''


def md(text: str):  # noqa: ANN201
    return new_markdown_cell(text)


def code(text: str):  # noqa: ANN201
    return new_code_cell(text)


NOTEBOOKS: dict[str, list] = {
    "01_warehouse_exploration.ipynb": [
        md("# Warehouse exploration\nLoads the simulated network into the embedded ClickHouse warehouse "
           "(`warehouse.connect`, the same schema as production) and explores it with the named queries "
           "behind the dashboards."),
        code(SETUP),
        code('''from warehouse import connect
from warehouse.loader import load_dir
from warehouse.queries import report_queries

wh = connect(f"chdb://{WORK / 'warehouse'}", follow_owner=False)
wh.migrate()
load_dir(wh, DATA, progress=False)
pd.Series(wh.table_counts()).sort_values(ascending=False).to_frame("rows").head(15)'''),
        md("## Named queries available to analysts"),
        code('''pd.DataFrame([(q.name, q.description) for q in report_queries()], columns=["query", "what"])'''),
        md("## Daily sales and transaction mix"),
        code('''daily = wh.query_df("""
    SELECT date, product, sum(captured_fen) / 100 AS revenue_yuan, sum(litres_sum) AS litres
    FROM rollup_sales_daily GROUP BY date, product ORDER BY date""")
pivot = daily.pivot_table(index="date", columns="product", values="revenue_yuan", aggfunc="sum")
pivot.plot(figsize=(10, 4), title="Revenue per day and product (yuan)")
plt.show()
daily.groupby("product")[["revenue_yuan", "litres"]].sum().round(0)'''),
        code('''status = wh.query_df("""
    SELECT status, count() AS transactions, sum(amount_fen) / 100 AS amount_yuan
    FROM fact_transactions FINAL GROUP BY status ORDER BY transactions DESC""")
status'''),
        md("## Stations by type and region"),
        code('''wh.query_df("""
    SELECT s.station_type AS station_type, s.region AS region, count() AS stations,
           sum(s.competitors_3km) AS competitors
    FROM dim_station AS s FINAL GROUP BY station_type, region ORDER BY stations DESC""")'''),
        code("wh.close()"),
    ],
    "02_fraud_review.ipynb": [
        md("# Fraud review analysis\nWhat the expert rules and the model caught on a held-out window, which "
           "fraud scenarios slip through, and what the false positives look like. Uses the CONTRACTS.md "
           "backtest protocol (`models.fraud.train.backtest`: causal features, labels only after their "
           "delay) and the production rule set (`fuelcard.rules`)."),
        code(SETUP),
        code('''from fuelcard.features import features_many
from fuelcard.rules import load_rules
from models.fraud.metrics import summarize
from models.fraud.train import backtest, prepare_transactions

tx = read("transactions")
days = pd.to_datetime(tx["ts"]).dt.date
first, last = days.min(), days.max()
test_start = last - pd.Timedelta(days=27)
result = backtest(tx, train_start=first, train_end=test_start - pd.Timedelta(days=8), test_start=test_start,
                  test_end=last, label_delay_days=7)
{k: v for k, v in result.info.items() if k != "features"}'''),
        code('''metrics = summarize(result.test, result.scores["score"].to_numpy(),
                    review_threshold=result.info["review_threshold"],
                    decline_threshold=result.info["decline_threshold"])
pd.json_normalize(metrics).T.rename(columns={0: "value"})'''),
        md("## Rules vs model, per fraud scenario"),
        code('''test = result.test.assign(score=result.scores["score"].to_numpy())
prepared = prepare_transactions(tx)
in_test = prepared["tx_id"].isin(test["tx_id"]).to_numpy()
features = features_many(prepared)[in_test]  # columns: FEATURE_NAMES
rules = load_rules()
fired = pd.Series([", ".join(h.rule_id for h in rules.evaluate(list(row))) for row in features],
                  index=prepared["tx_id"][in_test])
test["rules_fired"] = test["tx_id"].map(fired)
test["rule_flag"] = test["rules_fired"] != ""
test["model_flag"] = test["score"] >= result.info["review_threshold"]
scenario = tx.set_index("tx_id")["scenario"]
test["scenario"] = test["tx_id"].map(scenario).replace("", "legit")
test.groupby("scenario")[["rule_flag", "model_flag"]].mean().round(3)'''),
        code('''test.groupby("scenario")["score"].describe()[["count", "mean", "50%", "max"]].round(3)'''),
        md("## False positives: legitimate transactions held for review"),
        code('''fp = test[(test["is_fraud"] == 0) & test["model_flag"]]
print(f"false-positive rate: {len(fp) / max(1, (test['is_fraud'] == 0).sum()):.4%} of legitimate transactions")
fp.sort_values("score", ascending=False)[["tx_id", "card_id", "station_id", "amount_fen", "score", "rules_fired"]].head(10)'''),
        code('''ax = test[test["is_fraud"] == 0]["score"].plot.hist(bins=50, alpha=0.6, label="legit", logy=True, figsize=(8, 3))
test[test["is_fraud"] == 1]["score"].plot.hist(bins=50, alpha=0.6, label="fraud", ax=ax)
ax.axvline(result.info["review_threshold"], color="k", ls="--", label="review threshold")
ax.legend(); plt.show()'''),
    ],
    "03_churn_survival.ipynb": [
        md("# Churn: survival curves and segments\nThe member churn job (`models.churn.train_member_churn`): "
           "survival models on recency/frequency/monetary trends, expiring points and complaints, evaluated "
           "out of time, then every active member scored for churn within 90 days and segmented by value × "
           "risk with a graded retention action."),
        code(SETUP),
        code('''from IPython.display import Image

from models.churn import train_member_churn

km_png = WORK / "km_by_segment.png"
model, metrics, scored = train_member_churn(read("transactions"), read("members"), complaints=read("complaints"),
                                            redemptions=read("redemptions"), horizon_days=90, km_path=km_png,
                                            candidates=("cox", "weibull"))
pd.Series({k: v for k, v in metrics.items() if not isinstance(v, (dict, list))}).to_frame("value")'''),
        md("## Kaplan–Meier survival by segment (out-of-time landmark)"),
        code("Image(filename=str(km_png))"),
        md("## Segments and the retention action per segment"),
        code('''scored.groupby(["segment", "action"]).agg(members=("member_id", "size"),
                                         churn_probability=("churn_probability", "mean"),
                                         spend_90=("spend_90", "mean")).round(3)'''),
        code('''scored.sort_values("churn_probability", ascending=False)[
    ["member_id", "tier", "recency_days", "freq_trend", "points_expiring", "churn_probability", "segment", "action"]
].head(10)'''),
    ],
    "04_demand_forecast.ipynb": [
        md("# Demand forecasts with intervals, replenishment and leak alerts\n"
           "`models.demand.train_station_demand` forecasts 30 days per station × product with 80% intervals "
           "(time-series decomposition with holidays and the weekday cycle); `replenishment_plan` turns them into "
           "orders given tank capacity, lead time and safety stock; `leak_alerts` flags tanks whose readings "
           "disagree with sales."),
        code(SETUP),
        code('''from models.demand import leak_alerts, replenishment_plan, train_station_demand

sales = read("station_sales")
sales = sales[sales["product"].isin(["92", "95", "98", "diesel"])]
model, forecasts = train_station_demand(sales, horizon=30)
pd.Series(model.metrics).to_frame("holdout")'''),
        code('''sid, prod = forecasts.iloc[0][["station_id", "product"]]
hist = sales[(sales["station_id"] == sid) & (sales["product"] == prod)].set_index("date")["litres"]
fc = forecasts[(forecasts["station_id"] == sid) & (forecasts["product"] == prod)].set_index("date")
ax = hist.tail(90).plot(figsize=(10, 3.5), label="history")
fc["forecast"].plot(ax=ax, label="forecast")
ax.fill_between(fc.index, fc["lower"], fc["upper"], alpha=0.3, label="80% interval")
ax.set_title(f"Station {sid}, product {prod}: litres per day"); ax.legend(); plt.show()'''),
        md("## Replenishment plan"),
        code('''readings = read("tank_readings")
levels = (readings.sort_values("date").groupby("tank_id", as_index=False).tail(1)
          .rename(columns={"closing_l": "level_l"})[["tank_id", "level_l"]])
plan = replenishment_plan(forecasts, read("tanks"), levels)
plan.head(12)'''),
        md("## Leak / loss alerts (sales vs tank readings)"),
        code('''alerts = leak_alerts(readings)
print("injected leaks (ground truth):")
display(pd.read_parquet(DATA / "ground_truth" / "leaks.parquet"))
alerts'''),
    ],
    "05_pricing.ipynb": [
        md("# Pricing: elasticities and recommendations\n`models.pricing`: a regression of volume response on "
           "10+ drivers (own price, competitor prices, crude, season, weekday/holiday, traffic, station type, "
           "region…), then price recommendations per station: conservative near-monopolies, flexible in dense "
           "competition."),
        code(SETUP),
        code('''from models import pricing

frame = pricing.build_frame(sales=read("station_sales"), prices=read("prices"), stations=read("stations"),
                            competitor_prices=read("competitor_prices"), crude=read("crude"),
                            weather=read("weather"), calendar=read("calendar"),
                            station_hourly=read("station_hourly"), competitors=read("competitors"))
model = pricing.fit(frame)
print(pricing.coefficient_text(model))'''),
        code('''diag = pricing.plot_diagnostics(model, frame, WORK / "pricing_diagnostics.png")
from IPython.display import Image
Image(filename=str(diag))'''),
        md("## Recommendations per station and the regional view"),
        code('''rec = pricing.recommend(model, pricing.reference_rows(frame))
rec[["station_id", "product", "cls", "price_fen", "target_fen", "change_pct", "expected_volume_ratio",
     "expected_profit_uplift", "reason"]].head(12)'''),
        code("pricing.region_summary(rec)"),
        code('''truth = pd.read_json(DATA / "ground_truth" / "truth.json", typ="series")
truth.get("price_response")'''),
    ],
    "06_site_selection.ipynb": [
        md("# Site selection: heat maps and refuelling gaps\n`models.sites`: where members live, work and "
           "drive; gaps between homes and workplaces that no station covers; candidate sites scored under "
           "land-cost and access constraints; nozzle and product-mix suggestions for existing stations."),
        code(SETUP),
        code('''from IPython.display import Image

from models import sites

stations = read("stations")
model = sites.fit(stations=stations, members=read("members"), competitors=read("competitors"),
                  transactions=read("transactions"), vehicles=read("vehicles"), cards=read("cards"),
                  station_sales=read("station_sales"), station_hourly=read("station_hourly"))
pd.Series(model.metrics).to_frame("value")'''),
        code('''heat = sites.plot_heatmap(model, WORK / "sites_heatmap.png", stations=stations)
Image(filename=str(heat))'''),
        md("## Best candidate sites"),
        code("model.top.head(10)"),
        md("## Existing stations: nozzle and product-mix suggestions"),
        code("model.station_suggestions.head(10)"),
    ],
}


def build() -> list[Path]:
    """Write every notebook (no outputs) and return their paths."""
    out = []
    for name, cells in NOTEBOOKS.items():
        nb = new_notebook(cells=cells, metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
            "language_info": {"name": "python"},
        })
        path = HERE / name
        nbformat.write(nb, path)
        out.append(path)
    return out


if __name__ == "__main__":
    for p in build():
        print(p)  # noqa: T201
