"""The SAE quality tab's table, from named catalog reads: one row per SAE (control and raw neurons included),
the unspliced model's accuracy in its own row, the positions switch and sorting by any column."""

from __future__ import annotations

import pytest

from ard_core.catalog import Catalog, SaeMetricRow, SaeRow
from ard_core.ui.context import AppContext, UserError
from ard_core.ui.quality import quality_table

METRICS = {  # sae_id -> metric -> value
    "m": {"acc_gender": 0.9, "acc_emotion": 0.6, "n_gender": 24},
    "m-l1-e2": {"explained_variance": 0.8, "l0": 4.0, "ce_score": 0.7, "ce_score@all": 0.2, "kl": 0.1, "kl@all": 0.9,
                "spliced_acc_gender": 0.85, "spliced_acc_gender@all": 0.5, "spliced_acc_emotion": 0.55,
                "spliced_acc_emotion@all": 0.3, "probe_k1_gender": 0.9, "probe_k5_gender": 0.95,
                "seed_stability": 0.6},
    "m-l1-e2-random": {"explained_variance": 0.1, "l0": 4.0, "ce_score": 0.2, "ce_score@all": -1.0, "kl": 0.5,
                       "kl@all": 3.0, "spliced_acc_gender": 0.6, "spliced_acc_gender@all": 0.5,
                       "spliced_acc_emotion": 0.2, "spliced_acc_emotion@all": 0.2, "probe_k1_gender": 0.92,
                       "probe_k5_gender": 0.93},
    "m-l1-neurons": {"probe_k1_gender": 0.7, "probe_k5_gender": 0.8},
}


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("quality-ui")
    with Catalog.open(tmp / "catalog.duckdb") as cat:
        for sid in ("m-l1-e2", "m-l1-e2-random"):
            cat.upsert_sae(SaeRow(sid, "m", 1, 2, 4, 8, 16, str(tmp / sid), 0.2, 0.0, 4.0))
        cat.upsert([SaeMetricRow(sid, metric, "test", float(v), 0.01) for sid, ms in METRICS.items()
                    for metric, v in ms.items()])
    c = AppContext.open(tmp / "catalog.duckdb", load_model=False, annotations_path=tmp / "a.duckdb", clap="")
    yield c
    c.close()


def test_one_row_per_sae_with_the_unspliced_model_first(ctx):
    df = quality_table(ctx)
    assert list(df["SAE"]) == ["m", "m-l1-e2", "m-l1-e2-random", "m-l1-neurons"]
    assert list(df["kind"]) == ["unspliced model", "trained", "random control", "raw neurons"]
    row = df.set_index("SAE")
    assert row.loc["m", "spliced acc: gender"] == 0.9 and row.loc["m", "spliced acc (mean)"] == pytest.approx(0.75)
    assert row.loc["m-l1-e2", "CE score"] == 0.7 and row.loc["m-l1-e2", "KL"] == 0.1
    assert row.loc["m-l1-e2", "spliced acc (mean)"] == pytest.approx(0.7)
    assert row.loc["m-l1-e2-random", "probe k=1: gender"] == 0.92 and row.loc["m-l1-e2", "seed stability"] == 0.6
    assert row.loc["m-l1-neurons", "probe k=5 (mean)"] == 0.8 and row.isna().loc["m-l1-neurons", "EV"]


def test_spliced_at_every_position_switches_the_splice_columns_only(ctx):
    row = quality_table(ctx, "all").set_index("SAE")
    assert row.loc["m-l1-e2", "CE score"] == 0.2 and row.loc["m-l1-e2", "KL"] == 0.9
    assert row.loc["m-l1-e2-random", "spliced acc: gender"] == 0.5
    assert row.loc["m-l1-e2", "EV"] == 0.8 and row.loc["m", "spliced acc: gender"] == 0.9  # not spliced at all
    with pytest.raises(UserError, match="positions"):
        quality_table(ctx, "prompt")


def test_sorting_by_any_column(ctx):
    assert list(quality_table(ctx, sort_by="probe k=1 (mean)")["SAE"]) == ["m-l1-e2-random", "m-l1-e2",
                                                                          "m-l1-neurons", "m"]
    assert list(quality_table(ctx, sort_by="EV", descending=False)["SAE"])[:2] == ["m-l1-e2-random", "m-l1-e2"]
    with pytest.raises(UserError, match="no column"):
        quality_table(ctx, sort_by="nonsense")
