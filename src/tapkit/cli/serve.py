"""`tapkit serve`: the web page and HTTP API."""

from __future__ import annotations

import argparse
import errno
import ipaddress
import socket
import sys

from tapkit.cli.common import add_model_options, model_from_args
from tapkit.segmenter.load import load_segmenter
from tapkit.errors import UserError

EPILOG = """\
The page is at http://HOST:PORT/ ; the API schema at /openapi.json.
API (see docs/serve.md):
  POST /v1/images                      upload an image (multipart field 'file') -> {"id": ...}
  POST /v1/images/{id}/regions         {"prompts": [{"points": [[x, y, 1]]}, {"box": [x1, y1, x2, y2]}]}
  POST /v1/images/{id}/everything      automatic mode (where installed)
  GET  /healthz

The server has no authentication: it binds to 127.0.0.1 unless --host says otherwise.

examples:
  tapkit serve --checkpoint tap_vit_b_v1_1.pkl --tokenizer text_tokenizer.model --concepts merged_2560.pkl
  tapkit serve --port 9000 --max-upload-mb 10 --cache-mb 512
"""

MIB = 1024 * 1024


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "serve",
        help="serve the web page and HTTP API",
        description="Serve a page to click, box or sketch regions of an image and see mask, name and caption, and the HTTP API behind it.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    limits = p.add_argument_group("limits")
    limits.add_argument("--max-upload-mb", type=float, default=20.0, metavar="MB", help="largest image file accepted (default: 20)")
    limits.add_argument("--max-pixels", type=int, default=36_000_000, metavar="N", help="largest width x height accepted (default: 36000000)")
    limits.add_argument("--max-prompts", type=int, default=64, metavar="N", help="prompts per request (default: 64)")
    limits.add_argument("--cache-mb", type=float, default=1024.0, metavar="MB", help="memory for cached image embeddings (default: 1024)")
    tuning = p.add_argument_group("batching")
    tuning.add_argument("--batch-window-ms", type=float, default=2.0, metavar="MS", help="how long a request waits for others on the same image to share a batch (default: 2)")
    tuning.add_argument("--max-batch", type=int, default=64, metavar="N", help="prompts decoded together (default: 64)")
    p.add_argument("--segmenter", nargs="?", const="default", metavar="SAN",
                   help="also serve /segment and the page's Classes mode: a SAN checkpoint (or folder), or no value "
                        "for the packaged one (its --segmenter-tokenizer: a folder with vocab.json + merges.txt)")
    p.add_argument("--segmenter-tokenizer", metavar="FOLDER", help="the CLIP tokenizer of a released SAN checkpoint")
    p.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"), help="server log level (default: info)")
    add_model_options(p)
    p.set_defaults(func=run)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from tapkit.serve import ServeSettings, create_app
        from tapkit.serve.security import LOOPBACK_HOSTS
    except ImportError as err:
        raise UserError(f"tapkit serve needs the [serve] extra ({err.name} is missing): pip install 'tapkit-vision[serve]'") from None
    if not 0 <= args.port <= 65535:
        raise UserError(f"--port must be between 0 and 65535, got {args.port}")
    settings = ServeSettings(
        max_upload_bytes=int(args.max_upload_mb * MIB),
        max_pixels=args.max_pixels,
        max_prompts=args.max_prompts,
        cache_bytes=int(args.cache_mb * MIB),
        batch_window_ms=args.batch_window_ms,
        max_batch=args.max_batch,
        # On this machine only, also refuse other host names (DNS rebinding).
        allowed_hosts=LOOPBACK_HOSTS if is_loopback(args.host) else None,
    )
    sock = listen(args.host, args.port)  # a busy port fails here, before the model loads or a URL is shown
    try:
        model = model_from_args(args)
        segmenter = None
        if args.segmenter is not None:
            path = None if args.segmenter == "default" else args.segmenter
            segmenter = load_segmenter(path, tokenizer=args.segmenter_tokenizer, device=str(model.device))
        app = create_app(model, settings, segmenter=segmenter)
        if not is_loopback(args.host):
            print(f"tapkit serve: warning: listening on {args.host}, reachable from other machines; the server has no authentication", file=sys.stderr)
        host = f"[{args.host}]" if ":" in args.host else args.host
        print(f"tapkit serve: open http://{host}:{sock.getsockname()[1]}/", file=sys.stderr, flush=True)
        uvicorn.Server(uvicorn.Config(app, log_level=args.log_level)).run(sockets=[sock])
    finally:
        sock.close()
    return 0


def listen(host: str, port: int) -> socket.socket:
    """A socket bound to (host, port) and listening, handed to uvicorn; a one-line error
    when the address cannot be had (the port is taken, the host is not this machine's)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as err:
        raise UserError(f"cannot listen on --host {host}: {err.strerror}") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(2048)
    except OSError as err:
        sock.close()
        hint = ": another program is using it; pick another --port" if err.errno == errno.EADDRINUSE else f": {err.strerror}"
        raise UserError(f"cannot listen on {host}:{port}{hint}") from None
    return sock
