"""`rlvr serve`: an OpenAI-compatible HTTP server on the training rollout's own engines, chat format and tool loop.

`schema` holds the wire format, `backend` turns requests into generation jobs, `batcher` runs them on one worker
thread, `answers` shapes the results and `app` is the FastAPI application. FastAPI and uvicorn (the `serve` extra)
are imported by `app` only, so the rest of rlvr never waits for them.
"""
