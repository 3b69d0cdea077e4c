"""Handlers of the Steer and Annotate tabs, and building the app, on the fixture catalog."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from ui_fixtures import UiRun, run  # noqa: F401 (run is a fixture)

from ard_core.audio import load_audio
from ard_core.catalog import ConceptQuery, NotFound
from ard_core.steering import SteerSpec, steer
from ard_core.ui import annotate
from ard_core.ui import steer as steer_tab
from ard_core.ui import steer_choices
from ard_core.ui.context import AppContext, UserError


@pytest.fixture(scope="module")
def ctx(run: UiRun, tmp_path_factory: pytest.TempPathFactory):
    """With the model: the catalog's models table points at the tiny random Qwen2-Audio."""
    c = AppContext.open(run.catalog, annotations_path=tmp_path_factory.mktemp("ann") / "a.duckdb", clap="",
                        device="cpu")
    yield c
    c.close()


def test_the_catalog_model_is_loaded_once(ctx: AppContext, run: UiRun) -> None:
    assert ctx.llm is not None and ctx.llm.name == "tiny-random"
    assert "loaded" in ctx.model_note


def test_steering_matches_the_library_call(ctx: AppContext, run: UiRun) -> None:
    clip = steer_tab.clip_audio_path(ctx, "beep_01")
    preset = steer_tab.presets(ctx)["gender: question (P2)"]
    assert preset.labels == ("male", "female")  # the labels the catalog's clips carry
    refs = [run.ref("beep", 1), run.ref("hum", 2)]
    values = [25.0, -10.0]
    v = steer_tab.run_steer(ctx, clip, preset.question, preset.prefix, "male, female", refs, values, "set",
                            ["audio", "prompt", "generated"], 6)
    # reference: the same request through ard_core.steering directly
    llm = ctx.llm
    specs = [SteerSpec(1, {int(refs[0].split("/")[1]): 25.0}, ctx.sae(run.sae_ids[0]), "set"),
             SteerSpec(2, {int(refs[1].split("/")[1]): -10.0}, ctx.sae(run.sae_ids[1]), "set")]
    want = steer(llm, load_audio(clip), llm.build_prompt(preset.question, preset.prefix), specs,
                 max_new_tokens=6, labels=["male", "female"], with_lens=True)
    assert (v.original, v.steered) == (want.original.text, want.steered.text)
    assert list(v.probs["original"]) == pytest.approx([round(want.original.label_probs[l], 4) for l in ("male", "female")])
    assert list(v.probs["steered"]) == pytest.approx([round(want.steered.label_probs[l], 4) for l in ("male", "female")])
    # the lens figure holds both runs' per-layer probabilities
    lens_orig = next(t for t in v.lens_fig.data if t.name == "male (original)")
    np.testing.assert_allclose(lens_orig.y, want.original.lens[:, 0], rtol=1e-6)
    # steering really moved something at the steered layers
    assert not np.allclose(want.original.lens, want.steered.lens)


def test_adding_zero_changes_nothing(ctx: AppContext, run: UiRun) -> None:
    clip = steer_tab.clip_audio_path(ctx, "hum_00")
    v = steer_tab.run_steer(ctx, clip, "What is the gender of the speaker in the speech?", "The speaker's gender is",
                            "male, female", [run.ref("hum")], [0.0], "add", ["audio", "prompt"], 3)
    assert v.original == v.steered
    assert list(v.probs["change"]) == [0.0, 0.0]


def test_steering_errors_are_user_messages(ctx: AppContext, run: UiRun) -> None:
    clip = steer_tab.clip_audio_path(ctx, "hum_00")
    with pytest.raises(UserError, match="at least one feature"):
        steer_tab.run_steer(ctx, clip, "q", "", "", [], [])
    with pytest.raises(UserError, match="at most 4"):
        steer_tab.run_steer(ctx, clip, "q", "", "", [run.ref("hum")] * 5, [1.0] * 5)
    with pytest.raises(UserError, match="audio"):
        steer_tab.run_steer(ctx, None, "q", "", "", [run.ref("hum")], [1.0])
    with pytest.raises(UserError, match="SAE_ID/K"):
        steer_tab.run_steer(ctx, clip, "q", "", "", ["hum"], [1.0])
    with pytest.raises(NotFound, match="no clip"):
        steer_tab.clip_audio_path(ctx, "missing")
    spec = steer_tab.slider_spec(ctx, run.ref("beep"))
    max_act = ctx.catalog.feature_page(run.ref("beep")).feature.max_act
    assert spec.maximum == pytest.approx(np.ceil(4 * max_act)) and spec.value == pytest.approx(round(2 * max_act, 2))


def test_no_model_gives_a_clear_message(run: UiRun, tmp_path: Path) -> None:
    ctx = AppContext.open(run.catalog, load_model=False, annotations_path=tmp_path / "a.duckdb", clap="")
    try:
        with pytest.raises(UserError, match="No model loaded"):
            steer_tab.run_steer(ctx, "x.wav", "q", "", "", [run.ref("hum")], [1.0])
    finally:
        ctx.close()
    bad = AppContext.open(run.catalog, "/nonexistent/model", annotations_path=tmp_path / "b.duckdb", clap="")
    try:
        assert bad.llm is None and "could not be loaded" in bad.model_note and "--model" in bad.model_note
    finally:
        bad.close()


def test_annotation_flow_is_blind_and_resumable(ctx: AppContext, run: UiRun, tmp_path: Path) -> None:
    named = ctx.catalog.named_features()
    assert len(named) == 24  # every named feature of the fixture
    c = annotate.start(ctx, "Tester", 3, 5)
    assert (c.index, c.n_rated, c.revealed, c.name) == (0, 0, False, None)  # name hidden before the label
    assert 1 <= len(c.clips) <= annotate.N_CLIPS and all(Path(p).is_file() for _, p in c.clips)
    with pytest.raises(UserError, match="rating"):
        annotate.submit_rating(ctx, c.session.session_id, 0, None)
    with pytest.raises(ValueError, match="label"):
        annotate.submit_rating(ctx, c.session.session_id, 0, 3)
    c = annotate.submit_label(ctx, c.session.session_id, 0, "buzzing")
    row = ctx.catalog.feature_page(c.ref).feature
    assert c.revealed and c.name == row.name and c.description == row.description
    with pytest.raises(UserError, match="cannot be changed"):
        annotate.submit_label(ctx, c.session.session_id, 0, "something else")
    c = annotate.submit_rating(ctx, c.session.session_id, 0, "4")
    assert (c.index, c.n_rated, c.revealed) == (1, 1, False)
    # a reload: starting the same session again resumes at the first unrated concept
    again = annotate.start(ctx, "Tester", 3, 5)
    assert (again.index, again.n_rated) == (1, 1)
    table = annotate.answers_table(ctx, again.session.session_id)
    assert list(table["your label"]) == ["buzzing"] and list(table["rating"]) == [4]
    # the view shows the name only once revealed
    ups = annotate.view(ctx, again)
    reveal = ups[3 + annotate.N_CLIPS + 2]
    assert reveal.visible is False
    # finish the session
    for i in (1, 2):
        annotate.submit_label(ctx, again.session.session_id, i, f"label {i}")
        done = annotate.submit_rating(ctx, again.session.session_id, i, 5)
    assert done.done and done.n_rated == 3
    out = annotate.export_csv(ctx)
    rows = list(csv.DictReader(out.open()))
    assert sorted(r["rating"] for r in rows) == ["4", "5", "5"]
    md = annotate.summary_markdown(ctx)
    assert "4.67 ± 0.58" in md and "unavailable" in md  # no CLAP given to this context
    assert list(annotate.summary_table(ctx)["annotator"]) == ["Tester"]


def test_submit_answer_names_its_concept_and_is_safe_to_retry(run: UiRun, tmp_path: Path) -> None:
    ctx = AppContext.open(run.catalog, load_model=False, annotations_path=tmp_path / "a.duckdb", clap="")
    try:
        _submit_answer_checks(ctx)
    finally:
        ctx.close()


def _submit_answer_checks(ctx: AppContext) -> None:
    with pytest.raises(UserError, match="start it first"):
        annotate.submit_answer(ctx, "Scripter", 4, 2, "x/1", "hum", 3)
    s = annotate.start(ctx, "Scripter", 4, 2).session
    ref, other = s.features[2], s.features[3]  # any concept, in any order
    want = {"session_id": s.session_id, "ref": ref, "label": "a hum", "rating": 3, "n_rated": 1, "n": 4}
    assert annotate.submit_answer(ctx, "Scripter", 4, 2, ref, "a  hum ", 3) == want
    assert annotate.submit_answer(ctx, "Scripter", 4, 2, ref, "a hum", "3") == want  # a retry: nothing new
    assert annotate.submit_answer(ctx, "Scripter", 4, 2, ref, "a hum", 5)["rating"] == 5  # re-rated
    with pytest.raises(UserError, match="cannot be changed"):
        annotate.submit_answer(ctx, "Scripter", 4, 2, ref, "a buzz", 5)
    with pytest.raises(UserError, match="must be from 0 to 5"):
        annotate.submit_answer(ctx, "Scripter", 4, 2, other, "a buzz", 9)
    with pytest.raises(UserError, match="belongs to 'Scripter'"):
        annotate.submit_answer(ctx, "scripter", 4, 2, other, "a buzz", 1)
    with pytest.raises(UserError, match="not part of session"):
        annotate.submit_answer(ctx, "Scripter", 4, 2, "tiny-random-l1-e4/9999", "a buzz", 1)
    # a refused answer stores nothing, not even its label
    assert [(a.ref, a.label, a.rating) for a in ctx.annotations.answers(s.session_id)] == [(ref, "a hum", 5)]
    assert annotate.card(ctx, s.session_id).index == 0  # the tab still starts at the first unrated concept


def test_summary_uses_clap_when_available(run: UiRun, tmp_path: Path, tiny_clap_dir: Path) -> None:
    ctx = AppContext.open(run.catalog, load_model=False, annotations_path=tmp_path / "a.duckdb",
                          clap=str(tiny_clap_dir))
    try:
        c = annotate.start(ctx, "clapper", 1, 0)
        ctx.annotations.save_label(c.session.session_id, c.ref, ctx.catalog.feature_page(c.ref).feature.name)  # label == name
        ctx.annotations.save_rating(c.session.session_id, c.ref, 5)
        s = annotate.summary(ctx)
        assert s.clap_cosine.mean == pytest.approx(1.0, abs=1e-5)
        assert "BERTScore" in s.bertscore.name and s.bertscore.mean is None
    finally:
        ctx.close()


def test_the_app_builds_with_every_tab_and_api(ctx: AppContext) -> None:
    from ard_core.ui.app import TABS, create_app

    app = create_app(ctx=ctx)
    cfg = app.demo.get_config_file()
    api_names = {d.get("api_name") for d in cfg["dependencies"]}
    assert {"search_features", "feature", "steer", "annotate_start", "annotate_label", "annotate_rate"} <= api_names
    labels = {c.get("props", {}).get("label") for c in cfg["components"] if c.get("type") == "tabitem"}
    assert set(TABS.values()) <= labels
    assert ctx.catalog.clip_folders() == [str(Path(ctx.catalog.clip("beep_01").path).parent)]


def test_app_cli_reports_a_missing_catalog(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("app_main", Path(__file__).parents[1] / "app.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--catalog", str(tmp_path / "none.duckdb"), "--no-model"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_an_empty_catalog_gives_messages_not_errors(tmp_path: Path) -> None:
    from ard_core.catalog import Catalog
    from ard_core.ui import concepts, lens
    from ard_core.ui.app import create_app

    Catalog.open(tmp_path / "catalog.duckdb").close()
    app = create_app(tmp_path / "catalog.duckdb", clap="")
    ctx = app.ctx
    try:
        assert ctx.llm is None and "--model" in ctx.model_note
        assert "extract stage" in ctx.store_note
        assert concepts.search_features(ctx, ConceptQuery()).summary == "No features match."
        assert "precompute lens" in lens.info_curves(ctx, None, None, [], [], []).layout.annotations[0].text
        with pytest.raises(ValueError, match="describe stage"):
            annotate.start(ctx, "someone", 3, 0)
        assert annotate.summary_markdown(ctx) == "No annotations yet."
    finally:
        ctx.close()


def test_handler_errors_reach_users_as_one_line_messages() -> None:
    import gradio as gr

    from ard_core.ui.common import guard

    @guard
    def expected() -> None:
        raise UserError("pick a feature first")

    @guard
    def unexpected() -> None:
        raise RuntimeError("boom")

    with pytest.raises(gr.Error) as e1:
        expected()
    assert e1.value.message == "pick a feature first"
    with pytest.raises(gr.Error) as e2:
        unexpected()
    assert "RuntimeError: boom" in e2.value.message and "Traceback" not in e2.value.message


def test_the_steer_tab_ranks_by_steerability_and_fills_in_a_deep_link(ctx: AppContext, run: UiRun) -> None:
    hum = run.ref("hum")
    label, ref = steer_tab.feature_choices(ctx, "gender")[0]
    assert ref == hum and "steers male 3/4 at 30" in label
    assert steer_tab.feature_choices(ctx, "sound_event")[0][1] == run.ref("noise", 2)  # not first by rank
    assert steer_tab.feature_choices(ctx, None)[0][1] == ctx.catalog.ranked_features(1)[0].ref  # no track: by rank
    assert [r for _, r in steer_tab.feature_choices(ctx, "gender")].count(hum) == 1
    # the link from the feature page: its best row's probe clip and preset, and the value asked for
    assert steer_tab.prefill(ctx, hum, "30") == steer_choices.Prefill("hum_00", "gender: multiple choice (P3)", hum, 30.0)
    clip, preset, feats, pending = steer_tab.link_updates(ctx, hum, "12.5")
    assert clip.value == "hum_00" and preset == "gender: multiple choice (P3)"
    assert feats == [hum] and pending == {hum: 12.5}
    slider = steer_tab.slider_updates(ctx, [hum], pending)[0]
    assert slider.value == 12.5 and slider.visible
    # a picked feature's slider starts at its measured value; the range holds it with room beyond
    spec = steer_tab.slider_spec(ctx, hum)
    assert spec.value == 30.0 and spec.maximum >= 60
    # unmeasured: its first top clip, no preset, the slider where it always started
    beep = steer_tab.prefill(ctx, run.ref("beep"), None)
    assert beep.clip_id == ctx.catalog.top_clip_files(run.ref("beep"), 1)[0].clip_id and beep.preset is None
    assert steer_tab.link_updates(ctx, run.ref("beep"), None)[3] == {}
    with pytest.raises(UserError, match="finite"):
        steer_tab.prefill(ctx, hum, "nan")
