"""The random control and the quality stage on a tiny pipeline: the control is a frozen random SAE that
goes through score, describe and evaluate (a Table 1 row of its own), and the quality stage's figures
match plain recomputations (held-out explained variance, the unspliced P3 accuracy by steer-eval's judge)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ard_core.catalog import Catalog, ClipRow, ClipScoreRow, FeatureRow, parse_sae_id
from ard_core.config import ConfigError, RunConfig
from ard_core.datasets import load_manifest, save_manifest
from ard_core.evaluation import table1_sae
from ard_core.models import ModelConfig
from ard_core.sae import TopKSAE
from ard_core.sae.recipe import evaluate as fvu_l0
from ard_core.sae.section import SaeSection
from ard_core.store import ActivationStore
from conftest import gender_tone_manifest
from precompute import handover
from precompute.configs import DescribeConfig, EvaluateConfig, ExtractConfig, QualityConfig, ScoreConfig
from test_score_stage import _bag_of_words, _FixedSummarizer

SECTION = dict(layers=[1, 2], expansions=[2], k=4, batch_size=64, steps=20, lr=1e-3, warmup_steps=2,
               init_sample_tokens=512, eval_tokens=512, impl="sparse", random_controls=[[2, 2]])
QUALITY = QualityConfig(clips_per_track=8, caption_clips=8, batch_size=5, bootstrap=50)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, tiny_llm, tiny_clap_dir):
    from precompute.describe import describe
    from precompute.evaluate import evaluate
    from precompute.extract import extract
    from precompute.quality import quality
    from precompute.score import score
    from precompute.train_sae import train_all

    tmp = tmp_path_factory.mktemp("quality")
    manifest = gender_tone_manifest(tmp, "m.csv")
    save_manifest(load_manifest(manifest), tmp / "run" / "dataset" / "manifest.csv")
    run = RunConfig.from_raw({"run": {"out_dir": str(tmp / "run"), "device": "cpu", "seed": 1},
                              "extract": {"layers": [1, 2], "store_dtype": "float32"}})
    extract(run, run.section("model", ModelConfig), run.section("extract", ExtractConfig), llm=tiny_llm)
    rows = train_all(run, SaeSection(**SECTION), progress=False)
    score(run, ScoreConfig(p=2, top_c=4, batch_clips=5, random_seeds=2, clap_model=str(tiny_clap_dir)))
    describe(run, None, DescribeConfig(caption_max_new_tokens=4), llm=tiny_llm, summarizer=_FixedSummarizer())
    evaluate(run, EvaluateConfig(gamma=0.7), embed=_bag_of_words)
    out = quality(run, None, QUALITY, llm=tiny_llm)
    return run, rows, out


def test_the_control_is_a_frozen_random_sae_registered_beside_its_twin(pipeline):
    run, rows, _ = pipeline
    ids = [r.sae_id for r in rows]
    model = rows[0].model
    assert ids == [f"{model}-l1-e2", f"{model}-l2-e2", f"{model}-l2-e2-random"]
    control = rows[-1]
    assert control.control and not rows[1].control and parse_sae_id(control.sae_id) == (model, 2, 2)
    sae = TopKSAE.load(control.path)
    assert sae.cfg.dead_tokens_threshold is None and (sae.cfg.d_sae, sae.cfg.k) == (64, 4)
    assert torch.equal(sae.W_enc, sae.W_dec)  # encoder = decoder transpose (both stored as (d_sae, d_in))
    torch.testing.assert_close(sae.W_dec.norm(dim=1), torch.ones(64))
    assert not sae.b_enc.any() and not sae.b_dec.any()
    trained = TopKSAE.load(rows[1].path)
    assert not torch.equal(trained.W_dec, sae.W_dec)
    assert control.fvu > rows[1].fvu  # never trained: it reconstructs worse
    # Table 1 is never named on a control, even one of the same shape
    assert table1_sae(rows, None).sae_id == rows[1].sae_id
    with pytest.raises(ConfigError, match="not a trained SAE"):
        table1_sae(rows, control.sae_id)


def test_the_control_goes_through_score_describe_and_evaluate(pipeline):
    run, rows, _ = pipeline
    control = rows[-1].sae_id
    with Catalog.open(run.run.catalog_path, read_only=True) as cat:
        named = cat.rows(FeatureRow, "sae_id = ? AND name IS NOT NULL", [control])
        per_clip = {(r.method, r.metric): r for r in cat.evaluation_rows("table1", protocol="per_clip")}
        table4 = {(r.method, r.sae_id) for r in cat.evaluation_rows("table4", protocol="run")}
        scores = cat.rows(ClipScoreRow, "method = 'random_sae'")
        concepts = cat.query("SELECT count(*) AS n FROM method_concepts WHERE method = 'ard' AND sae_id = ?",
                             [control])[0]["n"]
    assert concepts == len(named) == 4  # describe named its top C = 4 'ard' features
    assert ("random_sae", "f1") in per_clip and ("random_sae", "ms") in per_clip
    assert ("random_sae", control) in table4 and ("ard", rows[1].sae_id) in table4
    assert scores and {s.sae_id for s in scores} == {control}  # the per-clip view links its own features
    assert handover.load(run, handover.Table1Choice).sae_id == rows[1].sae_id


def test_quality_rows_cover_every_sae_and_the_control(pipeline, tiny_llm):
    run, rows, out = pipeline
    with Catalog.open(run.run.catalog_path, read_only=True) as cat:
        m = {(r.sae_id, r.metric): r for r in cat.sae_metrics()}
    model = tiny_llm.name
    for s in rows:
        for metric in ("explained_variance", "l0", "kl", "kl@all", "spliced_acc_gender", "spliced_acc_gender@all",
                       "probe_k1_gender", "probe_k5_gender"):
            assert (s.sae_id, metric) in m, (s.sae_id, metric)
        for sfx in ("", "@all"):  # defined only where zeroing the layer there raises the caption loss
            hurts = m[(model, f"caption_ce_zero_l{s.layer}{sfx}")].value > m[(model, "caption_ce")].value
            assert ((s.sae_id, f"ce_score{sfx}") in m) == hurts
            assert (model, f"zero_kl_l{s.layer}{sfx}") in m and (model, f"zero_acc_l{s.layer}_gender{sfx}") in m
        assert 0 < m[(s.sae_id, "l0")].value <= 4
        assert m[(s.sae_id, "kl")].value >= 0 and 0 <= m[(s.sae_id, "spliced_acc_gender")].value <= 1
        assert 0 <= m[(s.sae_id, "probe_k1_gender")].value <= 1
    for layer in (1, 2):
        assert (f"{rows[0].model}-l{layer}-neurons", "probe_k1_gender") in m
    assert m[(tiny_llm.name, "n_gender")].value == 8 and (tiny_llm.name, "acc_gender") in m
    assert m[(rows[1].sae_id, "explained_variance")].value > m[(rows[2].sae_id, "explained_variance")].value
    text = out.read_text()
    assert "Random control" in text and rows[2].sae_id in text and "unspliced" in text


def test_heldout_explained_variance_is_a_plain_recount(pipeline):
    run, rows, _ = pipeline
    store = ActivationStore(run.run.out_dir / "activations")
    with Catalog.open(run.run.catalog_path, read_only=True) as cat:
        test = [c.clip_id for c in cat.rows(ClipRow) if c.split == "test"]
        m = {(r.sae_id, r.metric): r.value for r in cat.sae_metrics()}
    for s in rows:
        x = torch.from_numpy(np.concatenate([store.clip_tokens(s.layer, c) for c in test]).astype(np.float64))
        x_hat = TopKSAE.load(s.path).reconstruct(x.float()).detach().double()
        ev = 1 - float((x - x_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum())
        assert m[(s.sae_id, "explained_variance")] == pytest.approx(ev, abs=1e-5)
        assert m[(s.sae_id, "l0")] == pytest.approx(fvu_l0(TopKSAE.load(s.path), x.float())[1])


def test_unspliced_accuracy_is_steer_evals_judge_on_the_same_clips(pipeline, tiny_llm):
    from ard_core.audio import load_audio
    from ard_core.prompts import label_token_ids
    from ard_core.steer_batch import ClipPool
    from ard_core.steerability import judge_prompt
    from precompute.quality_fidelity import p3_items

    run, rows, _ = pipeline
    with Catalog.open(run.run.catalog_path, read_only=True) as cat:
        clips = cat.rows(ClipRow)
        acc = {r.metric: r.value for r in cat.sae_metrics(tiny_llm.name)}["acc_gender"]
    items = p3_items(tiny_llm, clips, QUALITY, run.run.seed)
    prompt, labels = judge_prompt("gender", ["female", "male"])
    pool = ClipPool(tiny_llm, [load_audio(it.clip.path) for it in items],
                    tiny_llm.build_prompt(prompt.question, prompt.prefix), label_token_ids(tiny_llm.tokenizer, labels),
                    [1])
    truth = [labels.index(it.clip.labels["gender"]) for it in items]
    assert acc == pytest.approx(np.mean(pool.base.answer == np.array(truth)))


def test_random_controls_must_name_a_shape_of_the_grid():
    with pytest.raises(ConfigError, match="random_controls"):
        SaeSection(**{**SECTION, "random_controls": [[3, 2]]})
    with pytest.raises(ConfigError, match="random_controls"):
        SaeSection(**{**SECTION, "random_controls": [[2]]})
    with pytest.raises(ConfigError, match="probe_splits"):
        QualityConfig(split="probe")



def test_report_renders_the_quality_table_and_what_the_control_shows(pipeline, tmp_path):
    from precompute.report import render

    run, rows, _ = pipeline
    readme = tmp_path / "README.md"
    readme.write_text("<!-- report:begin -->\n<!-- report:end -->\n")
    text = render(run, tmp_path / "cfg.toml", tmp_path / "figs", readme)
    assert "### SAE quality (test split; probes fitted on probe" in text
    assert "and the frozen random control " + rows[2].sae_id in text
    assert "| Rand. SAE |" in text  # Table 1's row and Table 4's line
    control = next(line for line in text.splitlines() if line.startswith("**Random control**"))
    assert rows[1].sae_id in control and "names (Table 1 per-clip F1)" in control
    assert "probes (k = 1)" in control and "probes (k = 5)" in control
    for s in rows:
        assert f"| {s.sae_id} |" in text
