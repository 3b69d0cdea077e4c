"""Launch the AR&D workbench on a catalog.

    python app.py --catalog runs/demo/catalog.duckdb [--model PATH_OR_ID] [--port 7860] [--mcp] [--auth FILE]

The catalog is opened read-only; annotations go to a sibling file
(``<catalog stem>.annotations.duckdb``). The model (default: the one the catalog was
built from) is loaded once, on the GPU when there is one.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import sys


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from ard_core.audio import AudioLimits

    limits = AudioLimits()
    p = argparse.ArgumentParser(description="AR&D workbench: browse SAE concepts, read the logit lens, steer, annotate")
    p.add_argument("--catalog", default="runs/demo/catalog.duckdb", help="catalog made by `python -m precompute run`")
    p.add_argument("--model", default=None,
                   help="AudioLLM folder or hub id for the Steer tab (default: the catalog's model)")
    p.add_argument("--no-model", action="store_true", help="start without a model (the Steer tab is disabled)")
    p.add_argument("--device", default="auto", help="'auto' (GPU when present), 'cpu', 'cuda' or 'cuda:N'")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 to serve the network)")
    p.add_argument("--annotations", default=None,
                   help="annotations file (default: <catalog stem>.annotations.duckdb beside the catalog)")
    p.add_argument("--clap", default=None, help="CLAP model folder for the annotation summary "
                                                "(default: assets/models/tiny-clap when present)")
    p.add_argument("--bertscore", default=None, help="local encoder folder (e.g. roberta-large) for BERTScore")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads for the model (default: %(default)s; 0 = torch's default). The app "
                        "serves several requests at once, and on a small shared CPU more threads per request "
                        "oversubscribe the cores: the tiny model ran 32x slower with 2 threads beside another job")
    p.add_argument("--max-upload-mb", type=float, default=limits.max_bytes / 2**20,
                   help="largest audio file a user may upload, in MB (default: %(default)g)")
    p.add_argument("--max-seconds", type=float, default=limits.max_seconds,
                   help="uploaded clips longer than this are cut to their first MAX_SECONDS seconds "
                        "(default: %(default)g)")
    p.add_argument("--auth", default=None, metavar="FILE",
                   help="turn on login: a users file of user:password-hash[:organiser] lines (make them with "
                        "`python -m ard_core.auth add FILE USER [--organiser]`); the annotator is then the "
                        "logged-in user, and organisers may fix the concept list and export every answer")
    p.add_argument("--mcp", action="store_true",
                   help="also serve the API as an MCP server (tools: search_features, feature, inspect, steer, ...) "
                        "at /gradio_api/mcp/; needs the mcp package: pip install -e '.[mcp]'")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from ard_core.audio import AudioLimits
    from ard_core.auth import AuthError, Users
    from ard_core.catalog import CatalogError
    from ard_core.config import apply_threads
    from ard_core.ui.app import create_app, launch

    if args.threads < 0:
        print(f"error: --threads must be >= 0, got {args.threads}", file=sys.stderr)
        return 2
    apply_threads(args.threads or None)
    if args.mcp and importlib.util.find_spec("mcp") is None:
        print("error: --mcp needs the mcp package: pip install -e '.[mcp]'", file=sys.stderr)
        return 2
    try:
        users = Users.load(args.auth) if args.auth else None
    except AuthError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        limits = AudioLimits(max_bytes=int(args.max_upload_mb * 2**20), max_seconds=args.max_seconds)
        app = create_app(args.catalog, args.model, load_model=not args.no_model, annotations_path=args.annotations,
                         device=args.device, clap=args.clap, bertscore=args.bertscore, audio_limits=limits,
                         users=users)
    except (CatalogError, RuntimeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    launch(app, port=args.port, host=args.host, mcp_server=args.mcp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
