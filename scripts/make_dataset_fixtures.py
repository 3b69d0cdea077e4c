"""Write the tiny fixture datasets under tests/data/datasets (checked in).

One miniature copy of each real format the loaders read, with 0.25 s tones as
audio and one entry per format whose audio file is missing (the loaders must
skip it). Re-run after changing a format:

    python scripts/make_dataset_fixtures.py
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1] / "tests" / "data" / "datasets"


def tone(path: Path, freq: float, sr: int = 16000, channels: int = 1, subtype: str = "PCM_16") -> None:
    t = np.arange(int(0.25 * sr)) / sr
    x = 0.3 * np.sin(2 * np.pi * freq * t)
    if channels == 2:
        x = np.stack([x, 0.5 * x], axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, x, sr, subtype=subtype)


def folder() -> None:
    d = ROOT / "folder"
    tone(d / "audio" / "calm.wav", 300)
    tone(d / "audio" / "shout.flac", 600, sr=44100, channels=2)
    (d / "metadata.csv").write_text(
        "file_name,split,gender,emotion,caption,speaker\n"
        "audio/calm.wav,train,female,neutral,a woman speaking calmly,spk1\n"
        "audio/shout.flac,test,male,angry,,spk2\n"
        "audio/missing.wav,train,male,sad,a man sighing,spk3\n")


def wavcaps() -> None:
    d = ROOT / "wavcaps"
    tone(d / "audio" / "180913.flac", 500)
    tone(d / "audio" / "Yb0RFKhbpFJA.flac", 700)
    data = {"num_captions_per_audio": 1, "data": [
        {"id": "180913", "caption": "A dog barks twice while birds chirp.", "duration": 0.25,
         "description": "dog barking in garden", "author": "someone", "href": "180913.html",
         "download_link": "https://example.invalid/180913"},
        {"id": "Yb0RFKhbpFJA.wav", "caption": "Rain falls on a tin roof.", "audio": "wav_path",
         "duration": 0.25},
        {"id": "999999", "caption": "This file was never downloaded.", "duration": 3.0},
    ]}
    (d / "json_files").mkdir(parents=True, exist_ok=True)
    (d / "json_files" / "fsd_final.json").write_text(json.dumps(data, indent=1))


def iemocap() -> None:
    d = ROOT / "iemocap" / "IEMOCAP_full_release"
    ev = d / "Session1" / "dialog" / "EmoEvaluation"
    ev.mkdir(parents=True, exist_ok=True)
    (ev / "Ses01F_impro01.txt").write_text(
        "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n\n"
        "[6.2901 - 8.2357]\tSes01F_impro01_F000\tneu\t[2.5000, 2.5000, 2.5000]\n"
        "C-E2:\tNeutral;\t()\n"
        "C-E3:\tNeutral;\t()\n\n"
        "[10.0100 - 11.3925]\tSes01F_impro01_M001\texc\t[3.5000, 3.5000, 3.0000]\n"
        "C-E1:\tExcited;\t()\n\n"
        "[14.8872 - 18.0175]\tSes01F_impro01_F002\txxx\t[2.0000, 2.5000, 2.5000]\n\n"
        "[19.2900 - 20.7875]\tSes01F_impro01_M003\tfru\t[2.0000, 3.5000, 3.5000]\n")
    ev5 = d / "Session5" / "dialog" / "EmoEvaluation"
    ev5.mkdir(parents=True, exist_ok=True)
    (ev5 / "Ses05M_script01_1.txt").write_text(
        "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n\n"
        "[3.0000 - 5.5000]\tSes05M_script01_1_M000\tang\t[1.5000, 4.0000, 4.0000]\n")
    for sess, utt, f in [(1, "Ses01F_impro01_F000", 220), (1, "Ses01F_impro01_M001", 330),
                         (1, "Ses01F_impro01_F002", 440), (5, "Ses05M_script01_1_M000", 550)]:
        tone(d / f"Session{sess}" / "sentences" / "wav" / utt.rsplit("_", 1)[0] / f"{utt}.wav", f)
    # Ses01F_impro01_M003 has a label but no wav: the loader must skip it.


def fsd50k() -> None:
    d = ROOT / "fsd50k"
    (d / "FSD50K.ground_truth").mkdir(parents=True, exist_ok=True)
    (d / "FSD50K.ground_truth" / "eval.csv").write_text(
        "fname,labels,mids\n"
        '37199,"Electric_guitar,Guitar,Plucked_string_instrument,Musical_instrument,Music",'
        '"/m/02sgy,/m/0342h,/m/0fx80y,/m/04szw,/m/04rlf"\n'
        '175151,"Bark,Dog,Domestic_animals_and_pets,Animal","/m/05tny_,/m/0bt9lr,/m/068hy,/m/0jbk"\n')
    (d / "FSD50K.ground_truth" / "dev.csv").write_text(
        "fname,labels,mids,split\n"
        '64760,"Electric_guitar,Guitar","/m/02sgy,/m/0342h",train\n'
        '16399,"Walk_and_footsteps","/m/07pbtc8",val\n')
    tone(d / "FSD50K.eval_audio" / "37199.wav", 800)
    tone(d / "FSD50K.eval_audio" / "175151.wav", 900)
    tone(d / "FSD50K.dev_audio" / "64760.wav", 1000)
    tone(d / "FSD50K.dev_audio" / "16399.wav", 1100)


def sakura() -> None:
    d = ROOT / "sakura"
    header = "file_name,attribute_label,single_instruction,single_answer\n"
    (d / "Gender" / "audio").mkdir(parents=True, exist_ok=True)
    (d / "Gender" / "metadata.csv").write_text(
        header + 'g1.wav,Female,"What is the gender of the speaker?",female\n'
        'g2.wav,Male,"What is the gender of the speaker?",male\n')
    tone(d / "Gender" / "audio" / "g1.wav", 250)
    tone(d / "Gender" / "audio" / "g2.wav", 120)
    (d / "Animal" / "audio").mkdir(parents=True, exist_ok=True)
    (d / "Animal" / "metadata.csv").write_text(
        header + 'a1.wav,Dog,"What animal makes this sound?",dog\n'
        'a2.wav,Rooster,"What animal makes this sound?",rooster\n')
    tone(d / "Animal" / "audio" / "a1.wav", 600)
    tone(d / "Animal" / "audio" / "a2.wav", 900)
    (d / "Language").mkdir(parents=True, exist_ok=True)
    (d / "Language" / "metadata.csv").write_text(header + 'l1.wav,german,"Which language?",German\n')
    tone(d / "Language" / "l1.wav", 300)  # audio next to the CSV (no audio/ folder)
    (d / "Emotion" / "audio").mkdir(parents=True, exist_ok=True)
    (d / "Emotion" / "metadata.csv").write_text(header + 'e1.wav,Disgusted,"How does the speaker feel?",disgusted\n')
    tone(d / "Emotion" / "audio" / "e1.wav", 350)


def audiobench() -> None:
    d = ROOT / "audiobench"
    emo = [
        {"audio": "audio/iemo_0.wav", "instruction": "What emotion does the speaker convey?",
         "answer": "The speaker sounds happy and excited.", "other_attributes": {}},
        {"audio": "audio/iemo_1.wav", "instruction": "What emotion does the speaker convey?",
         "answer": "Anger.", "other_attributes": {"emotion": "ang"}},
        {"audio": "audio/iemo_2.wav", "instruction": "What emotion does the speaker convey?",
         "answer": "The speaker is sad.", "other_attributes": {}},
    ]
    gen = [
        {"audio": "audio/vox_0.wav", "instruction": "What is the gender of the speaker?",
         "answer": "The speaker is female."},
        {"audio": "audio/vox_1.wav", "instruction": "What is the gender of the speaker?",
         "answer": "Male"},
    ]
    for task, entries in (("iemocap_emotion", emo), ("voxceleb_gender", gen)):
        (d / task).mkdir(parents=True, exist_ok=True)
        (d / task / "metadata.jsonl").write_text("".join(json.dumps(e) + "\n" for e in entries))
        for i, e in enumerate(entries):
            if not e["audio"].endswith("_2.wav"):  # iemo_2 is missing on purpose
                tone(d / task / e["audio"], 200 + 100 * i)


def main() -> None:
    if ROOT.exists():
        shutil.rmtree(ROOT)
    for make in (folder, wavcaps, iemocap, fsd50k, sakura, audiobench):
        make()
    n = sum(1 for _ in ROOT.rglob("*") if _.is_file())
    print(f"wrote {n} fixture files under {ROOT}")


if __name__ == "__main__":
    main()
