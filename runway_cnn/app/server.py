"""The web app: a page and a JSON API over exports of any task, a retrieval index and an
attribute index, all loaded once by :func:`create_app` and shared by the requests.

    POST /api/predict   a photo (multipart field ``file``, or the raw body) →
                        {"predictions": {model: Predictor's result},
                         "display": {model: its Task.display}, "similar": [...],
                         "recommend": {"map": [x, y], "neighbours": [...]}} (each neighbour
                        with its result's ``display`` too);
                        ``?explain=1``: each result also has ``explanations``, a Grad-CAM
                        overlay (PNG data URL) per label it gives, or ``explain_error``
    GET  /api/models    the loaded models, their tasks and labels; the indexes
    GET  /api/map       the attribute map's points (with ``--recommend``)
    GET  /thumb/{kind}/{position}   a small JPEG of an indexed catalog item
    GET  /healthz       {"status": "ok"}
    GET  /docs, /openapi.json       the API's OpenAPI page

A bad photo or request is HTTP 400 ``{"error": "..."}``; inference runs in worker threads, off
the event loop. The page renders each answer from its ``display`` (``{"caption", "items":
[{"text", "score"}]}``, made by the model's task), knowing no task.
"""
from __future__ import annotations

import base64
import io
import logging
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Sequence

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from runway_cnn.app.uploads import FIELD, check_image, read_upload
from runway_cnn.data.images import encoded_as_trained
from runway_cnn.errors import RunwayError
from runway_cnn.export.gradcam import gradcam_refusal
from runway_cnn.inference.attribute_index import AttributeIndex, AttributeSearch
from runway_cnn.inference.batch import read_image
from runway_cnn.inference.predictor import Predictor
from runway_cnn.inference.retrieval import ImageIndex, SimilarItems, load_embedder
from runway_cnn.plots import overlay_heatmap

PAGE = Path(__file__).parent / "static" / "index.html"
THUMB_SIDE = 160  # pixels, the longer side of a catalog thumbnail
THUMBS_CACHED = 512
log = logging.getLogger("runway_cnn.app")

_IMAGE_BODY = {"schema": {"type": "string", "format": "binary"}}
PREDICT_BODY = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "required": [FIELD], "properties": {
        FIELD: {"type": "string", "format": "binary", "description": "the photo"}}}},
    "image/jpeg": _IMAGE_BODY, "image/png": _IMAGE_BODY,
    "application/octet-stream": _IMAGE_BODY}}}
ERROR_RESPONSE = {400: {"description": "a bad photo or request", "content": {
    "application/json": {"schema": {"type": "object", "properties": {
        "error": {"type": "string"}}}}}}}


def _names(predictors: Sequence[Predictor]) -> list[str]:
    """Each export's serving name (the folder above its version), made unique with ``#2``,
    ``#3`` … in the order given: every model given is shown."""
    names: list[str] = []
    for predictor in predictors:
        name = candidate = predictor.version_dir.parent.name
        number = 1
        while candidate in names:
            number += 1
            candidate = f"{name}#{number}"
        names.append(candidate)
    return names


@dataclass
class Models:
    """Everything a request needs, loaded once: predictors by name, the similar-item search and
    the attribute search (or None), and the limits on uploads."""

    predictors: dict[str, Predictor]
    similar: SimilarItems | None = None
    recommend: AttributeSearch | None = None
    k: int = 8
    max_bytes: int = 20 * 2 ** 20
    max_pixels: int = 50_000_000
    catalogs: dict[str, list[dict]] = field(default_factory=dict)

    def analyse(self, data: bytes, explain: bool = False) -> dict:
        """A photo's answers: every model's result, as :meth:`Predictor.predict` gives it, and
        its ``display`` (:meth:`Task.display`, what the page shows of it), and the similar items
        and attribute-map place when there are indexes. With ``explain``,
        each result also carries ``explanations`` (:func:`_explained`), or ``explain_error``
        for a model whose backbone has no feature map."""
        check_image(data, self.max_pixels)
        encoded = encoded_as_trained(data)
        predictions = {name: _explained(predictor, encoded) if explain else
                       predictor.predict([encoded])[0]
                       for name, predictor in self.predictors.items()}
        answer: dict = {"predictions": predictions, "display": {
            name: _display(self.predictors[name], result) for name, result in predictions.items()}}
        if self.similar is None and self.recommend is None:
            return answer
        image = read_image(data)
        if self.similar is not None:
            found = self.similar.search(self.similar.embed([image]), self.k)[0]
            answer["similar"] = [{**_public(self.similar.index.items[j]), "score": score,
                                  "thumb": f"/thumb/similar/{j}"} for j, score in found]
        if self.recommend is not None:
            near = self.recommend.nearest(self.recommend.vector(image))
            answer["recommend"] = {"map": near["map"], "neighbours": [
                {**_public(n), "thumb": f"/thumb/recommend/{n['position']}",
                 "display": _display(self.recommend.predictor, n["result"])}
                for n in near["neighbours"]]}
        return answer

    def describe(self) -> dict:
        """The loaded models (name, task, labels, export) and indexes, for ``/api/models``."""
        out = {"models": [{"name": name, "task": p.task.name, "labels": p.labels,
                           "export": str(p.version_dir)} for name, p in self.predictors.items()],
               "max_mb": self.max_bytes / 2 ** 20, "max_pixels": self.max_pixels}
        if self.similar is not None:
            out["similar"] = {"items": len(self.similar.index.items), "k": self.k}
        if self.recommend is not None:
            out["recommend"] = {"items": len(self.recommend.index.items),
                                "groups": self.recommend.groups}
        return out

    def map_points(self) -> dict:
        """The attribute map: every catalog item's 2-D place and a caption of its result."""
        if self.recommend is None:
            raise LookupError("no attribute index loaded (--recommend)")
        task, index = self.recommend.predictor.task, self.recommend.index
        return {"points": [[float(x), float(y)] for x, y in index.map],
                "captions": [task.display(item["result"])["caption"] for item in index.items]}

    def thumbnail(self, kind: str, position: int) -> bytes:
        """A small JPEG of the indexed item at ``position`` of the ``kind`` index; only files
        the index lists are ever opened (``LookupError`` for anything else)."""
        return _thumbnail(self._item_path(kind, position))

    def _item_path(self, kind: str, position: int) -> str:
        items = self.catalogs.get(kind)
        if items is None or not 0 <= position < len(items):
            raise LookupError(f"no item {position} in the {kind} index")
        return items[position]["path"]


def _display(predictor: Predictor, result: dict) -> dict:
    """What the page shows of a result (:meth:`Task.display`) but its Grad-CAM maps, which the
    page draws itself (as it shows the ``error``), whatever the task."""
    return predictor.task.display({k: v for k, v in result.items()
                                   if k not in ("explanations", "explain_error")})


def _explained(predictor: Predictor, encoded: bytes) -> dict:
    """:meth:`Predictor.explain`'s result, each map drawn over the eval crop as a PNG data URL
    (``overlay``); a model that cannot explain gives its plain result and ``explain_error``."""
    if not predictor.explains:
        return {**predictor.predict([encoded])[0],
                "explain_error": gradcam_refusal(predictor.meta, predictor.version_dir.name)}
    result = predictor.explain([encoded])[0]
    crop = predictor.crop(read_image(encoded))
    result["explanations"] = [
        {"label": e["label"], "score": e["score"],
         "overlay": "data:image/png;base64," + base64.b64encode(
             _png(overlay_heatmap(crop, e["heatmap"]))).decode("ascii")}
        for e in result["explanations"]]
    return result


def _png(image) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "PNG")
    return buffer.getvalue()


def _public(item: dict) -> dict:
    """An index item without its server-side path (its file name instead)."""
    return {**{k: v for k, v in item.items() if k not in ("path", "position")},
            "name": os.path.basename(item["path"])}


@lru_cache(maxsize=THUMBS_CACHED)
def _thumbnail(path: str) -> bytes:
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im).convert("RGB")
        im.thumbnail((THUMB_SIDE, THUMB_SIDE))
        buffer = io.BytesIO()
        im.save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def load_models(models: Sequence[str | os.PathLike | Predictor],
                index: str | os.PathLike | ImageIndex | None = None,
                recommend: str | os.PathLike | AttributeIndex | None = None,
                k: int = 8, max_mb: float = 20, max_pixels: int = 50_000_000) -> Models:
    """Loads the exports and indexes once (user errors raised here, naming the flag)."""
    from PIL import Image

    if not models:
        raise RunwayError("--model: give at least one export")
    if k < 1 or max_mb <= 0 or max_pixels < 1:
        raise RunwayError(f"--k {k} / --max_mb {max_mb} / --max_pixels {max_pixels}: each must "
                          "be positive")
    if Image.MAX_IMAGE_PIXELS and max_pixels > 2 * Image.MAX_IMAGE_PIXELS:
        raise RunwayError(f"--max_pixels {max_pixels}: above PIL's decompression-bomb limit "
                          f"({2 * Image.MAX_IMAGE_PIXELS:,})")
    predictors = [m if isinstance(m, Predictor) else Predictor(m) for m in models]
    loaded = Models(dict(zip(_names(predictors), predictors)), k=k,
                    max_bytes=int(max_mb * 2 ** 20), max_pixels=max_pixels)
    if index is not None:
        index = index if isinstance(index, ImageIndex) else ImageIndex(index)
        loaded.similar = SimilarItems(index, load_embedder(index.meta["model"]))
        loaded.catalogs["similar"] = index.items
    if recommend is not None:
        loaded.recommend = AttributeSearch(recommend, k)
        loaded.catalogs["recommend"] = loaded.recommend.index.items
    return loaded


def create_app(models: Sequence[str | os.PathLike | Predictor] | Models,
               index: str | os.PathLike | ImageIndex | None = None,
               recommend: str | os.PathLike | AttributeIndex | None = None,
               max_mb: float = 20, max_pixels: int = 50_000_000, k: int = 8) -> FastAPI:
    """The FastAPI app over exports (paths or :class:`Predictor`), an optional retrieval
    ``index`` and attribute index ``recommend``; everything loads here, once."""
    loaded = models if isinstance(models, Models) else load_models(
        models, index, recommend, k, max_mb, max_pixels)
    app = FastAPI(title="runway_cnn", version="1",
                  description="A photo in: its labels, styles, attributes and similar catalog "
                              "items, from runway_cnn exports (the answers `Predictor` gives).")
    app.state.models = loaded

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    @app.exception_handler(RunwayError)
    async def user_error(request: Request, exc: RunwayError) -> JSONResponse:
        return error(400, str(exc))

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error(400, "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                                    for e in exc.errors()))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return error(exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("request %s failed", request.url.path)
        return error(500, f"internal error ({type(exc).__name__}); see the server's log")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> str:
        return PAGE.read_text(encoding="utf-8")

    @app.get("/healthz", summary="liveness: the models are loaded")
    async def healthz() -> dict:
        return {"status": "ok", "models": len(loaded.predictors)}

    @app.get("/api/models", summary="the loaded models (task, labels) and indexes")
    async def api_models() -> dict:
        return loaded.describe()

    @app.get("/api/map", summary="the attribute map's points (with --recommend)",
             responses={404: {"description": "no attribute index loaded"}})
    async def api_map() -> dict:
        try:
            return loaded.map_points()
        except LookupError as exc:
            raise HTTPException(404, str(exc)) from None

    @app.post("/api/predict", openapi_extra=PREDICT_BODY, responses=ERROR_RESPONSE,
              summary="a photo → every model's answer (as Predictor.predict gives it), "
                      "similar items and the attribute-map place; ?explain=1 adds each "
                      "answer's Grad-CAM overlays")
    async def api_predict(request: Request, explain: bool = False) -> dict:
        data = await read_upload(request.headers, request.stream(), loaded.max_bytes)
        return await run_in_threadpool(loaded.analyse, data, explain)

    @app.get("/thumb/{kind}/{position}", summary="a catalog item's thumbnail (JPEG)",
             responses={404: {"description": "no such indexed item"}})
    async def thumb(kind: str, position: int) -> Response:
        try:
            jpeg = await run_in_threadpool(loaded.thumbnail, kind, position)
        except LookupError as exc:
            raise HTTPException(404, str(exc)) from None
        except OSError as exc:
            raise HTTPException(404, f"the item's file cannot be read: {exc}") from None
        return Response(jpeg, media_type="image/jpeg",
                        headers={"Cache-Control": "max-age=3600"})

    return app

