"""The HTTP side: FastAPI routes in OpenAI's shape, errors as OpenAI error bodies, streams as server-sent events.

Bodies are parsed here (not by FastAPI's own body validation) so that every client error, from bad JSON to a wrong
type deep inside `messages`, gets the same answer: a 4xx status and `{"error": {"message", "type", "param",
"code"}}`, `param` naming the field as `messages[0].content`.

A stream's text comes from the worker thread as the engine samples it, through the request's own asyncio queue
(`loop.call_soon_threadsafe`): the response starts with the first text (so a request the server cannot render still
gets its 4xx, before any event), its chunks follow as they come, then the finished reply's rest. A client that
leaves mid-stream leaves its queue unread; the worker goes on with the batch.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException

from rlvr.serve.answers import chat_completion, text_completion
from rlvr.serve.backend import Generated, Job, RequestError, ServedModel
from rlvr.serve.batcher import Batcher
from rlvr.serve.schema import ChatCompletionRequest, CompletionRequest, ErrorBody, ErrorDetail, ModelCard, ModelList
from rlvr.serve.streaming import ChatStream, CompletionStream

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


# A streamed choice's new text, (choice index, text); None: the reply is finished, or failed.
StreamEvent = tuple[int, str] | None
# (model name, job, its choices) -> the finished answer
Answer = Callable[[str, Job, list[Generated]], Any]


async def _sse(chunks: AsyncIterator[BaseModel]) -> AsyncIterator[str]:
    async for chunk in chunks:
        yield f"data: {chunk.model_dump_json(exclude_none=True)}\n\n"
    yield "data: [DONE]\n\n"


def _from_worker(loop: asyncio.AbstractEventLoop, events: asyncio.Queue[StreamEvent], event: StreamEvent) -> None:
    """Queue `event` from the worker thread; a loop already closed (the server stopped) has no reader left, and the
    worker must not fail for it."""
    try:
        loop.call_soon_threadsafe(events.put_nowait, event)
    except RuntimeError:
        pass


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

    async def generated(request: ChatCompletionRequest | CompletionRequest, build: Callable[[], Job], size: int) -> Any:
        model.check_model(request.model)  # before queueing: a wrong model name never waits for a batch
        return await asyncio.wrap_future(batcher.submit(build, size))

    async def streamed(
        request: ChatCompletionRequest | CompletionRequest,
        build: Callable[[], Job],
        size: int,
        stream: ChatStream | CompletionStream,
        answer: Answer,
    ) -> Response:
        model.check_model(request.model)
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[StreamEvent] = asyncio.Queue()

        def streaming() -> Job:  # on the worker thread, which decodes the job's rows into `events` as they grow
            job = build()
            job.deltas = lambda index, text: _from_worker(loop, events, (index, text))
            return job

        future: Future[tuple[Job, list[Generated]]] = batcher.submit(streaming, size)
        # Set after the last delta was queued, so it arrives after them (the loop runs callbacks in order).
        future.add_done_callback(lambda _: _from_worker(loop, events, None))
        try:
            first = await events.get()
        except asyncio.CancelledError:  # the client left before anything was generated: the worker skips it
            future.cancel()
            raise
        if first is None:
            future.result()  # a failure before any text is the request's error response, as without `stream`

        async def chunks() -> AsyncIterator[BaseModel]:
            event = first
            while event is not None:
                for chunk in stream.delta(*event):
                    yield chunk
                event = await events.get()
            try:
                job, choices = future.result()
            except Exception as error:  # the response has begun: the error is its last event, as OpenAI sends one
                yield ErrorBody(error=ErrorDetail(message=f"{type(error).__name__}: {error}", type="server_error"))
                return
            for chunk in stream.finish(answer(model.name, job, choices)):
                yield chunk

        return StreamingResponse(_sse(chunks()), media_type="text/event-stream")

    @app.get("/v1/models")
    async def models() -> Response:
        return _json(ModelList(data=[ModelCard(id=model.name)]))

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        body = parse(ChatCompletionRequest, await request.body())
        if body.stream:
            stream = ChatStream(model.name, bool(body.stream_options and body.stream_options.include_usage))
            return await streamed(body, lambda: model.chat_job(body), body.n, stream, chat_completion)
        job, choices = await generated(body, lambda: model.chat_job(body), body.n)
        return _json(chat_completion(model.name, job, choices))

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        body = parse(CompletionRequest, await request.body())
        size = body.n * len(body.prompts)
        if body.stream:
            stream = CompletionStream(model.name, bool(body.stream_options and body.stream_options.include_usage))
            return await streamed(body, lambda: model.completion_job(body), size, stream, text_completion)
        job, choices = await generated(body, lambda: model.completion_job(body), size)
        return _json(text_completion(model.name, job, choices))

    return app


def run_server(model: ServedModel, host: str, port: int) -> None:
    """Serve until interrupted (Ctrl-C)."""
    uvicorn.run(create_app(model), host=host, port=port, log_level="info")


__all__ = ["create_app", "error_response", "parse", "run_server"]
