"""Write the tiny fixture datasets under tests/data/datasets (checked in).

One miniature copy of each real dataset in its publisher's on-disk layout (the layouts and
their sources are listed in ``tests/dataset_fixtures.py``), with 0.25 s tones as audio and one
entry per dataset whose audio file is missing (the loaders must skip it). Re-run after
changing a layout:

    python scripts/make_dataset_fixtures.py
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from dataset_fixtures import (  # noqa: E402
    tone, write_audiobench, write_fsd50k, write_iemocap, write_sakura, write_wavcaps,
)

ROOT = REPO / "tests" / "data" / "datasets"

WAVCAPS = {  # source -> (id, caption, seconds); the last of each has no audio
    "FreeSound": [("180913", "A dog barks twice while birds chirp.", 0.25), ("2149", "Rain falls on leaves.", 0.25),
                  ("999999", "This file was never downloaded.", 3.0)],
    "BBC_Sound_Effects": [("07070156", "An aircraft passes overhead.", 0.25), ("07070157", "Never downloaded.", 2.0)],
    "SoundBible": [("2149", "Thunder rolls in the distance.", 0.25), ("2150", "Never downloaded.", 1.0)],
    "AudioSet_SL": [("Yb0RFKhbpFJA", "Rain falls on a tin roof.", 0.25), ("Y00000000000", "Never downloaded.", 10.0)],
}

IEMOCAP = [  # (turn, category code, seconds)
    ("Ses01F_impro01_F000", "neu", 0.25), ("Ses01F_impro01_M001", "exc", 0.25), ("Ses01F_impro01_F002", "xxx", 0.25),
    ("Ses01F_impro01_M003", "fru", 0.25), ("Ses01F_impro01_F004", "oth", 0.25),
    ("Ses05M_script01_1_M000", "ang", 0.25),
]


def folder() -> None:
    """This project's own generic format (a folder of audio and a CSV)."""
    d = ROOT / "folder"
    tone(d / "audio" / "calm.wav", 300)
    tone(d / "audio" / "shout.flac", 600, sr=44100, channels=2)
    (d / "metadata.csv").write_text(
        "file_name,split,gender,emotion,caption,speaker\n"
        "audio/calm.wav,train,female,neutral,a woman speaking calmly,spk1\n"
        "audio/shout.flac,test,male,angry,,spk2\n"
        "audio/missing.wav,train,male,sad,a man sighing,spk3\n")


def main() -> None:
    if ROOT.exists():
        shutil.rmtree(ROOT)
    folder()
    write_wavcaps(ROOT / "WavCaps", WAVCAPS)
    write_iemocap(ROOT / "IEMOCAP_full_release", IEMOCAP, no_wav=["Ses01F_impro01_M003"])
    write_fsd50k(ROOT / "FSD50K")
    write_sakura(ROOT / "SAKURA")
    for task in ("iemocap_emotion_test", "voxceleb_gender_test"):
        write_audiobench(ROOT / "AudioBench" / task, task)
    n = sum(1 for p in ROOT.rglob("*") if p.is_file())
    print(f"wrote {n} fixture files under {ROOT}")


if __name__ == "__main__":
    main()
