"""``python -m runway_cnn.app``: a local web page and JSON API over exports of any task.

    python -m runway_cnn.app --model EXPORT [--model EXPORT2 ...] [--index RETRIEVAL_INDEX]
        [--recommend ATTRIBUTE_INDEX] [--host 127.0.0.1] [--port 8080] [--max_mb 20]

Open http://HOST:PORT/ and drop a photo on the page: every model's answer (top-k classes, the
predicted label set, each attribute's value) as bars, and with indexes the most similar catalog
items and the photo's place on the attribute map. ``POST /api/predict`` (the photo as the
multipart field ``file`` or the raw body) returns what ``Predictor.predict`` returns per model;
``/docs`` is the API's OpenAPI page. Binds to 127.0.0.1 unless ``--host`` says otherwise; a port
in use is a one-line error before anything loads.
"""
from __future__ import annotations

import argparse
import errno
import socket
import sys

from runway_cnn import cli
from runway_cnn.errors import RunwayError, first_line


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m runway_cnn.app",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", required=True,
                        help="an export or train dir (repeat for several models)")
    parser.add_argument("--index", help="a retrieval index (python -m runway_cnn.index build)")
    parser.add_argument("--recommend",
                        help="an attribute index (python -m runway_cnn.recommend build)")
    parser.add_argument("--k", type=int, default=8, help="similar items shown per photo")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (0.0.0.0 exposes the page to the network)")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--max_mb", type=float, default=20, help="largest upload, in MB")
    parser.add_argument("--max_pixels", type=int, default=50_000_000,
                        help="largest image, in pixels (checked before decoding)")
    args = parser.parse_args(argv)
    try:
        import uvicorn

        from runway_cnn.app.server import create_app
    except ImportError as error:
        raise RunwayError(f"the web app needs {error.name}: pip install 'runway_cnn[app]'") \
            from None
    listener = bind(args.host, args.port)  # before loading anything: a port in use is one line
    try:
        app = create_app(args.model, args.index, args.recommend, args.max_mb, args.max_pixels,
                         args.k)
        print(f"serving {', '.join(app.state.models.predictors)} on "
              f"http://{args.host}:{args.port}/", file=sys.stderr)
        server = uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port,
                                               log_level="warning"))
        server.run(sockets=[listener])  # a Ctrl-C: uvicorn shuts down, then raises it again
    except KeyboardInterrupt:  # not cli.run's hint to resume: a page has nothing to resume
        raise KeyboardInterrupt(f"stopped: http://{args.host}:{args.port}/ is closed") from None
    finally:
        listener.close()


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (uvicorn then serves on it, so nothing can take the
    port in between); a port in use or an address this machine does not have is one line."""
    try:
        return socket.create_server((host, port), family=_family(host), backlog=2048)
    except OSError as error:
        if error.errno == errno.EADDRINUSE:
            raise RunwayError(f"--port {port}: {host}:{port} is in use (another server?); give "
                              "another --port") from None
        raise RunwayError(f"--host {host} --port {port}: cannot listen there "
                          f"({first_line(error)})") from None


def _family(host: str) -> socket.AddressFamily:
    try:
        return socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)[0][0]
    except OSError:
        return socket.AF_INET


if __name__ == "__main__":
    cli.run(main)
