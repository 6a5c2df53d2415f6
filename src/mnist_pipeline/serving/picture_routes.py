"""Routes beside MLflow's scoring protocol, added to its FastAPI app: pictures in, class names out.

GET  /           the draw-a-digit page (page/index.html)
GET  /metadata   the model's dataset: its name, class names, image shape, preprocessing
POST /predict    a picture (PNG, JPEG, ... as the raw body, Content-Type image/*), made into one of the
                 dataset's images exactly as `mnist-pipeline predict` makes it (data/pictures.conform);
                 answered {"class", "probability", "classes", "probabilities"}
"""

from __future__ import annotations

import asyncio
import json
from importlib import resources
from typing import Any

import numpy as np
from fastapi import Request  # at the top: FastAPI resolves the handlers' annotations at runtime
from fastapi.responses import HTMLResponse, JSONResponse, Response

from mnist_pipeline.data import pictures

PAGE = resources.files("mnist_pipeline.serving") / "page" / "index.html"


def add_routes(app: Any, model: Any, metadata: dict) -> None:
    """`app`: MLflow's scoring app (FastAPI); `model`: the compiled model; `metadata`: the logged model's."""
    prep = pictures.Preprocess.of_model(metadata)
    classes = list(metadata.get("classes") or [str(i) for i in range(model.predict(_blank(model)).shape[1])])
    described = {
        "dataset": metadata.get("dataset", "mnist"),
        "classes": classes,
        "image_shape": list(model.input_shape),
        "preprocess": metadata.get("preprocess") or {},
    }
    page = PAGE.read_bytes()

    def failure(status: int, code: str, message: str) -> Response:
        return JSONResponse({"error_code": code, "message": message}, status_code=status)

    def classify(data: bytes) -> dict:
        image = pictures.conform("the picture", prep, data=data).astype(np.float32) / 255.0
        probs = model.predict(image[np.newaxis])[0].tolist()
        best = int(np.argmax(probs))
        return {"class": classes[best], "probability": probs[best], "classes": classes, "probabilities": probs}

    @app.get("/", response_class=HTMLResponse)
    async def draw_page() -> Response:
        return Response(page, media_type="text/html; charset=utf-8")

    @app.get("/metadata")
    async def model_metadata() -> Response:
        return Response(json.dumps(described), media_type="application/json")

    @app.post("/predict")
    async def predict_picture(request: Request) -> Response:
        mime = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
        if not mime.startswith("image/"):
            got = f"Content-Type {mime}" if mime else "no Content-Type header"
            message = f"send a picture (image/png, image/jpeg...) as the body; got {got}"
            return failure(415, "UNSUPPORTED_MEDIA_TYPE", message)
        data = await request.body()
        if not data:
            return failure(400, "BAD_REQUEST", "the body is empty: send the picture's bytes")
        try:
            return JSONResponse(await asyncio.to_thread(classify, data))
        except pictures.ImageError as exc:
            return failure(400, "BAD_REQUEST", str(exc))


def _blank(model: Any) -> np.ndarray:
    return np.zeros((1, *model.input_shape), np.float32)
