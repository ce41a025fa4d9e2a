"""The HTTP side: FastAPI routes in OpenAI's shape, errors as OpenAI error bodies, streams as server-sent events.

Bodies are parsed here (not by FastAPI's own body validation) so that every client error, from bad JSON to a wrong
type deep inside `messages`, gets the same answer: a 4xx status and `{"error": {"message", "type", "param",
"code"}}`, `param` naming the field as `messages[0].content`.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException

from rlvr.serve.answers import chat_chunks, chat_completion, completion_chunks, text_completion
from rlvr.serve.backend import RequestError, ServedModel
from rlvr.serve.batcher import Batcher
from rlvr.serve.schema import ChatCompletionRequest, CompletionRequest, ErrorBody, ErrorDetail, ModelCard, ModelList

RequestT = TypeVar("RequestT", bound=BaseModel)
# A location part that names a member of a union (`str`, `list[TextPart]`, `function-after[...]`), not a field.
_UNION_MEMBER = re.compile(r"^(str|int|float|bool|list|dict|none)$|[\[\]-]")


def _param(location: tuple[Any, ...]) -> str | None:
    """A validation error's location as OpenAI names a field: `messages[0].tool_calls[1].function`."""
    name = ""
    for part in location:
        if isinstance(part, int):
            name += f"[{part}]"
        elif _UNION_MEMBER.search(str(part)):
            break
        else:
            name += f".{part}" if name else str(part)
    return name or None


def _described(error: dict[str, Any]) -> RequestError:
    param, kind = _param(error["loc"]), error["type"]
    if kind == "json_invalid":
        return RequestError(f"the body is not valid JSON: {error['msg']}", None, "invalid_json")
    if kind == "model_type" and param is None:
        return RequestError("the body must be a JSON object", None, "invalid_type")
    if kind == "missing":
        return RequestError(f"{param}: required", param, "missing")
    if kind == "extra_forbidden":
        return RequestError(f"{param}: unknown parameter (not one this server implements)", param, "unknown_parameter")
    got = repr(error["input"])
    got = f" (got {got[:80]}{'...' if len(got) > 80 else ''})" if not isinstance(error["input"], dict) else ""
    message = error["msg"].removeprefix("Value error, ")
    return RequestError(f"{param}: {message}{got}" if param else f"{message}{got}", param, kind)


def parse(kind: type[RequestT], body: bytes) -> RequestT:
    try:
        return kind.model_validate_json(body or b"null")
    except ValidationError as error:
        raise _described(error.errors(include_url=False)[0]) from None


def error_response(status: int, message: str, kind: str, param: str | None = None, code: str | None = None) -> JSONResponse:
    body = ErrorBody(error=ErrorDetail(message=message, type=kind, param=param, code=code))
    return JSONResponse(body.model_dump(), status_code=status)


def _sse(chunks: Iterator[BaseModel]) -> Iterator[str]:
    for chunk in chunks:
        yield f"data: {chunk.model_dump_json(exclude_none=True)}\n\n"
    yield "data: [DONE]\n\n"


def _json(answer: BaseModel) -> Response:
    return Response(answer.model_dump_json(exclude_none=True), media_type="application/json")


def create_app(model: ServedModel) -> FastAPI:
    settings = model.settings
    batcher = Batcher(model.generate, settings.batch_window_ms / 1000, settings.batch_size)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        batcher.start()
        yield
        await asyncio.to_thread(batcher.stop)

    app = FastAPI(title="rlvr", summary="An OpenAI-compatible server for rlvr's models", lifespan=lifespan)

    @app.exception_handler(RequestError)
    async def _request_error(request: Request, error: RequestError) -> JSONResponse:
        return error_response(error.status, error.message, "invalid_request_error", error.param, error.code)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, error: HTTPException) -> JSONResponse:
        kind = "invalid_request_error" if error.status_code < 500 else "server_error"
        return error_response(error.status_code, f"{request.method} {request.url.path}: {error.detail}", kind)

    @app.exception_handler(Exception)
    async def _server_error(request: Request, error: Exception) -> JSONResponse:
        return error_response(500, f"{type(error).__name__}: {error}", "server_error")

    async def generated(request: ChatCompletionRequest | CompletionRequest, build: Any, size: int) -> Any:
        model.check_model(request.model)  # before queueing: a wrong model name never waits for a batch
        return await asyncio.wrap_future(batcher.submit(build, size))

    @app.get("/v1/models")
    async def models() -> Response:
        return _json(ModelList(data=[ModelCard(id=model.name)]))

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        body = parse(ChatCompletionRequest, await request.body())
        job, choices = await generated(body, lambda: model.chat_job(body), body.n)
        answer = chat_completion(model.name, job, choices)
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return StreamingResponse(_sse(chat_chunks(answer, include_usage)), media_type="text/event-stream")
        return _json(answer)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        body = parse(CompletionRequest, await request.body())
        job, choices = await generated(body, lambda: model.completion_job(body), body.n * len(body.prompts))
        answer = text_completion(model.name, job, choices)
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return StreamingResponse(_sse(completion_chunks(answer, include_usage)), media_type="text/event-stream")
        return _json(answer)

    return app


def run_server(model: ServedModel, host: str, port: int) -> None:
    """Serve until interrupted (Ctrl-C)."""
    uvicorn.run(create_app(model), host=host, port=port, log_level="info")


__all__ = ["create_app", "error_response", "parse", "run_server"]
