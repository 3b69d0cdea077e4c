"""Miniature copies of the real datasets, written in each publisher's on-disk layout.

Written from the publishers' descriptions, never from this project's loaders:

- **WavCaps** (Mei et al., 2024; huggingface.co/datasets/cvssp/WavCaps, its README): metadata
  in ``json_files/<Source>/<stem>_final.json`` (AudioSet_SL/as_final, BBC_Sound_Effects/bbc_final,
  FreeSound/fsd_final, SoundBible/sb_final) as ``{"num_captions_per_audio": 1, "data": [...]}``;
  audio in ``Zip_files/<Source>/*.zip``, which unpack to
  ``mnt/fast/nobackup/scratch4weeks/xm00178/WavCaps/data/waveforms/<Source>_flac/<id>.flac``
  (the path users of the zips report). Entry fields per source as in the released JSON:
  FreeSound id/file_name/href/tags/description/author/duration/download_link/caption, BBC
  id/description/category/caption/audio/download_link/duration, SoundBible
  title/description/author/href/caption/id/duration/audio/download_link, AudioSet_SL
  id ('<youtube id>.wav')/caption/audio/duration. FreeSound, BBC and SoundBible number clips
  with bare integers, so ids collide across sources (here FreeSound and SoundBible share 2149).
- **IEMOCAP** (Busso et al., 2008; the IEMOCAP_full_release README): ``Session<n>/dialog/
  EmoEvaluation/<dialog>.txt`` with one ``[START - END]\\tTURN\\tCODE\\t[V, A, D]`` line per turn
  followed by the evaluators' ``C-E<n>:`` lines; codes neu hap sad ang sur fea dis fru exc oth
  xxx; subfolders (Categorical/, Attribute/) of per-evaluator files; audio in
  ``Session<n>/sentences/wav/<dialog>/<turn>.wav``.
- **FSD50K** (Fonseca et al., 2022; zenodo.org/record/4060432, its README):
  ``FSD50K.ground_truth/{dev,eval}.csv`` (fname, labels, mids[, split]) and ``vocabulary.csv``;
  audio in ``FSD50K.{dev,eval}_audio/<fname>.wav``.
- **SAKURA** (Yang et al., 2025; github.com/ckyang1124/SAKURA, ``data/README.md``):
  ``data/<Track>/metadata.csv`` with the six columns file, attribute_label, single_instruction,
  single_answer, multi_instruction, multi_answer; audio in ``data/<Track>/audio/``. The label
  values ('Female', 'German', 'Disgusted', 'Dog') are our assumption: the README names the
  column, not its values.
- **AudioBench** (Wang et al., 2024; huggingface.co/datasets/AudioLLMs/iemocap_emotion_test and
  voxceleb_gender_test, and AudioBench's dataset code, which reads sample['context'],
  sample['instruction'], sample['answer'], sample['other_attributes']): one parquet file
  ``data/test-00000-of-00001.parquet`` whose ``context`` is a Hugging Face Audio column (a
  struct of encoded ``bytes`` and ``path``). The instructions are AudioBench's own; the answers'
  wording and other_attributes' fields are our assumption.

Audio is a tone per clip (``tone``), so a fixture is small; ``seconds`` sets clip lengths where
a test needs long clips (the rehearsal's 30 s window).
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Sequence

import numpy as np
import soundfile as sf

WAVCAPS_ZIP_PATH = "mnt/fast/nobackup/scratch4weeks/xm00178/WavCaps/data/waveforms"
WAVCAPS_JSON = {"AudioSet_SL": "as_final", "BBC_Sound_Effects": "bbc_final", "FreeSound": "fsd_final",
                "SoundBible": "sb_final"}


def tone(path: Path, freq: float, seconds: float = 0.25, sr: int = 16000, channels: int = 1) -> Path:
    t = np.arange(int(seconds * sr)) / sr
    x = 0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * np.random.default_rng(int(freq)).standard_normal(t.size)
    if channels == 2:
        x = np.stack([x, 0.5 * x], axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, x, sr, subtype="PCM_16")
    return path


def _wavcaps_entry(source: str, clip: str, caption: str, seconds: float) -> dict:
    if source == "FreeSound":
        return {"id": clip, "file_name": f"{clip} field recording.wav", "href": f"/people/someone/sounds/{clip}/",
                "tags": ["field-recording"], "description": caption.lower(), "author": "someone",
                "duration": seconds, "download_link": f"https://freesound.org/people/someone/sounds/{clip}/download/",
                "caption": caption}
    if source == "BBC_Sound_Effects":
        return {"id": clip, "description": caption, "category": "['Nature']", "caption": caption, "audio": "wav_path",
                "download_link": f"https://sound-effects-media.bbcrewind.co.uk/zip/{clip}.wav.zip", "duration": seconds}
    if source == "SoundBible":
        return {"title": caption.split()[0], "description": caption, "author": "someone",
                "href": f"{clip}-Sound.html", "caption": caption, "id": clip, "duration": seconds, "audio": "wav_path",
                "download_link": f"http://soundbible.com/grab.php?id={clip}&type=wav"}
    return {"id": f"{clip}.wav", "caption": caption, "audio": "wav_path", "duration": seconds}


def write_wavcaps(root: Path, clips: dict[str, Sequence[tuple[str, str, float]]], missing: int = 1) -> Path:
    """``clips``: source -> (id, caption, seconds); the last ``missing`` entries of each source get no audio."""
    for k, (source, items) in enumerate(clips.items()):
        entries = [_wavcaps_entry(source, cid, cap, sec) for cid, cap, sec in items]
        path = root / "json_files" / source / f"{WAVCAPS_JSON[source]}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"num_captions_per_audio": 1, "data": entries}, indent=1))
        flac = root / "Zip_files" / source / WAVCAPS_ZIP_PATH / f"{source}_flac"
        for i, (cid, _, sec) in enumerate(items[: len(items) - missing]):
            path = flac / f"{cid}.flac"
            path.parent.mkdir(parents=True, exist_ok=True)
            t = np.arange(int(sec * 16000)) / 16000
            sf.write(path, 0.3 * np.sin(2 * np.pi * (200 + 150 * k + 40 * i) * t), 16000, format="FLAC")
    return root


def write_iemocap(root: Path, turns: Sequence[tuple[str, str, float]], no_wav: Sequence[str] = ()) -> Path:
    """``turns``: (turn name 'Ses01F_impro01_F000', category code, seconds); one EmoEvaluation file per dialog."""
    by_dialog: dict[str, list[tuple[str, str, float]]] = {}
    for turn in turns:
        by_dialog.setdefault(turn[0].rsplit("_", 1)[0], []).append(turn)
    for dialog, items in by_dialog.items():
        session = root / f"Session{int(dialog[3:5])}"
        ev = session / "dialog" / "EmoEvaluation"
        lines, start = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""], 2.0
        for name, code, sec in items:
            lines += [f"[{start:.4f} - {start + sec:.4f}]\t{name}\t{code}\t[2.5000, 3.0000, 3.0000]",
                      "C-E1:\tNeutral;\t()", "C-E2:\tNeutral;\t()", "A-E1:\tval 3; act 3; dom  3;\t()", ""]
            if name not in no_wav:
                tone(session / "sentences" / "wav" / dialog / f"{name}.wav", 150 + 30 * len(lines), sec)
            start += sec + 1.0
        ev.mkdir(parents=True, exist_ok=True)
        (ev / f"{dialog}.txt").write_text("\n".join(lines) + "\n")
        (ev / "Categorical").mkdir(exist_ok=True)  # per-evaluator files: not the majority labels
        (ev / "Categorical" / f"{dialog}_e1_cat.txt").write_text(f"{items[0][0]} :Neutral state; ()\n")
    return root


def write_fsd50k(root: Path) -> Path:
    gt = root / "FSD50K.ground_truth"
    gt.mkdir(parents=True, exist_ok=True)
    (gt / "vocabulary.csv").write_text("0,Electric_guitar,/m/02sgy\n1,Bark,/m/05tny_\n2,Walk_and_footsteps,/m/07pbtc8\n")
    (gt / "eval.csv").write_text(
        "fname,labels,mids\n"
        '37199,"Electric_guitar,Guitar,Plucked_string_instrument,Musical_instrument,Music",'
        '"/m/02sgy,/m/0342h,/m/0fx80y,/m/04szw,/m/04rlf"\n'
        '175151,"Bark,Dog,Domestic_animals_and_pets,Animal","/m/05tny_,/m/0bt9lr,/m/068hy,/m/0jbk"\n')
    (gt / "dev.csv").write_text(
        "fname,labels,mids,split\n"
        '64760,"Electric_guitar,Guitar","/m/02sgy,/m/0342h",train\n'
        '16399,"Walk_and_footsteps","/m/07pbtc8",val\n')
    for sub, fname, f in [("eval", "37199", 800), ("eval", "175151", 900), ("dev", "64760", 1000),
                          ("dev", "16399", 1100)]:
        tone(root / f"FSD50K.{sub}_audio" / f"{fname}.wav", f)
    return root


SAKURA_ROWS = {
    "Gender": [("g1.wav", "Female", "Please identify the gender of the speaker. (a) male (b) female", "(b) female"),
               ("g2.wav", "Male", "Please identify the gender of the speaker. (a) male (b) female", "(a) male")],
    "Language": [("l1.wav", "German", "Listen to the speech segment, and choose the language spoken by the "
                  "speaker. (a) English (b) German", "(b) German")],
    "Emotion": [("e1.wav", "Disgusted", "What emotion is the speaker expressing in the audio? (a) happy "
                 "(b) disgusted", "(b) disgusted")],
    "Animal": [("a1.wav", "Dog", "Identify the animal most likely responsible for the sound in this audio clip "
                "and choose the most likely one from the options. (a) dog (b) cat", "(a) dog"),
               ("a2.wav", "Rooster", "Identify the animal ... (a) rooster (b) cow", "(a) rooster")],
}


def write_sakura(repo: Path) -> Path:
    """The repository's ``data/`` folder: ``<Track>/metadata.csv`` and ``<Track>/audio/``."""
    import csv

    for t, (track, rows) in enumerate(SAKURA_ROWS.items()):
        folder = repo / "data" / track
        folder.mkdir(parents=True, exist_ok=True)
        with (folder / "metadata.csv").open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["file", "attribute_label", "single_instruction", "single_answer", "multi_instruction",
                        "multi_answer"])
            for i, (file, label, instruction, answer) in enumerate(rows):
                w.writerow([file, label, instruction, answer, f"A multi-hop question about the {track.lower()}.",
                            "(a) an answer"])
                tone(folder / "audio" / file, 200 + 100 * t + 30 * i)
    return repo / "data"


AUDIOBENCH_ROWS = {
    "iemocap_emotion_test": [
        ("Ses05F_impro01_F000.wav", "What emotion does the speaker convey?", "The speaker sounds sad, not happy."),
        ("Ses05M_impro02_M003.wav", "How would you describe the emotions conveyed in the speaker's voice?",
         "Anger."),
        ("Ses05F_script01_F010.wav", "What is the emotional tone of the speaker's speech?",
         "The speaker is happy and excited."),
        (None, "What emotion does the speaker convey?", "Neutral."),  # no audio bytes, no file: skipped
    ],
    "voxceleb_gender_test": [
        ("id10270/5r0dWxy17C8/00001.wav", "Can you tell the speaker's gender from the audio (Male or Female)?",
         "Female"),
        ("id10271/1gtz-CUIygI/00001.wav", "Can you tell the speaker's gender from the audio (Male or Female)?",
         "The speaker is male."),
    ],
}


def write_audiobench(root: Path, task: str) -> Path:
    """One task as the hub serves it: ``README.md`` and ``data/test-00000-of-00001.parquet``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    contexts, instructions, answers, others = [], [], [], []
    for i, (name, instruction, answer) in enumerate(AUDIOBENCH_ROWS[task]):
        data = None
        if name is not None:
            buf = io.BytesIO()
            t = np.arange(4000) / 16000
            sf.write(buf, 0.3 * np.sin(2 * np.pi * (180 + 70 * i) * t), 16000, format="WAV", subtype="PCM_16")
            data = buf.getvalue()
        contexts.append({"bytes": data, "path": name})
        instructions.append(instruction)
        answers.append(answer)
        others.append({"speaker": (name or "unknown").split("/")[0].split("_")[0]})
    table = pa.table({
        "context": pa.array(contexts, pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
        "instruction": instructions, "answer": answers,
        "other_attributes": pa.array(others, pa.struct([("speaker", pa.string())])),
    })
    (root / "data").mkdir(parents=True, exist_ok=True)
    pq.write_table(table, root / "data" / "test-00000-of-00001.parquet")
    (root / "README.md").write_text(f"---\nconfigs:\n- config_name: default\n  data_files:\n  - split: test\n"
                                    f"    path: data/test-*\n---\n# {task}\n")
    return root
