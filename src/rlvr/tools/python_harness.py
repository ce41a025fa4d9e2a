"""The python tool's harness: runs as `main.py` in the sandbox, standard library only (see `rlvr.tools.python_session`).

Protocol on stdin, one item per line: the nonce; "<wall seconds> <chars to keep per text> <file size cap in bytes>
<random seed>"; then one "<cell number> <hex of its UTF-8 source>" per cell, the earlier (replayed) cells first and
the new cell last. On the original stdout: "<nonce> run <i>" when the i-th cell starts, and at the end one "<nonce>
end key=value ..." line (text values hex-encoded). The nonce and the report lines follow `harness_protocol`, which
travels beside this file (so this is a program for the sandbox, not a module to import on the host).
"""

import ast
import builtins
import codecs
import os
import random
import signal
import sys

from harness_protocol import reporter, take_job


def main() -> None:
    # The nonce is in no file or descriptor the cells can reach.
    nonce, job, report_fd, null = take_job()
    lines = job.split("\n")
    del job
    seconds, keep, file_limit, seed = lines[0].split(" ")
    seconds, keep, file_limit = float(seconds), int(keep), int(file_limit)
    cells = []
    for line in lines[1:]:
        number, source = line.split(" ")
        cells.append((f"<cell {number}>", bytes.fromhex(source).decode("utf-8")))
    del lines
    *replay, (filename, source) = cells
    sources = {name: text.split("\n") for name, text in cells}

    # The new cell's output goes to files that no path leads to, read back at the end.
    captures = []
    for name in (".cell-stdout", ".cell-stderr"):
        fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        os.unlink(name)
        captures.append(fd)

    # Everything used once cells have run is bound here, out of their reach.
    send = reporter(nonce, report_fd)
    dup2, pread, fstat, getpid, exit_ = os.dup2, os.pread, os.fstat, os.getpid, os._exit
    setitimer, real_timer, alarm = signal.setitimer, signal.ITIMER_REAL, signal.SIGALRM
    decode, only_ast, Expr, Expression = codecs.utf_8_decode, ast.PyCF_ONLY_AST, ast.Expr, ast.Expression
    run, comp, evaluate, represent, to_str = exec, compile, eval, repr, str
    kind, is_a, size, base_exception, numbered = type, isinstance, len, BaseException, enumerate
    streams = (sys.stdout, sys.stderr)
    harness_pid = getpid()
    state = {"cell": 0, "done": False}

    def flush() -> None:
        for stream in streams:
            try:
                stream.flush()
            except base_exception:
                pass

    def hexed(text: str) -> str:
        return text.encode("utf-8", "backslashreplace").hex()

    def excerpt(name: str, head: str, tail: str, length: int) -> str:
        return f"{name}={hexed(head)} {name}_tail={hexed(tail)} {name}_len={length}"

    def read_capture(fd: int) -> tuple[str, str, int, int]:
        # First and last `keep` characters and the length in characters, decoding 1 MiB at a time.
        head, tail, length, offset, pending = "", "", 0, 0, b""
        end = fstat(fd).st_size
        while True:
            data = pread(fd, 1 << 20, offset) if offset < end else b""
            offset += size(data)
            text, used = decode(pending + data, "replace", not data)
            pending = (pending + data)[used:]
            length += size(text)
            if size(head) < keep:
                head += text[: keep - size(head)]
            tail = (tail + text)[-keep:]
            if not data:
                return head, tail, length, end

    def describe(exc: BaseException) -> str:
        try:
            cls = kind(exc)
            name = cls.__qualname__
            if cls.__module__ not in ("builtins", "__main__"):
                name = cls.__module__ + "." + name
        except base_exception:
            name = "Exception"
        try:
            message = to_str(exc)
        except base_exception:
            message = "<exception str() failed>"
        return (name + ": " + message if message else name)[:keep]

    def format_traceback(exc: BaseException, summary: str) -> str:
        # Only the cells' frames, the last few, repeats collapsed as Python does: the harness's own frames would only
        # confuse, library internals rarely help.
        groups = []
        tb = exc.__traceback__
        while tb is not None:
            code = tb.tb_frame.f_code
            frame = (code.co_filename, tb.tb_lineno, code.co_name)
            if code.co_filename in sources:
                if groups and groups[-1][0] == frame:
                    groups[-1][1] += 1
                else:
                    groups.append([frame, 1])
            tb = tb.tb_next
        out = ["Traceback (most recent call last):"] if groups else []
        omitted = 0
        for _, repeats in groups[:-5]:
            omitted += repeats
        if omitted:
            out.append(f"  ... {omitted} earlier frames")
        for (name, lineno, function), repeats in groups[-5:]:
            out.append(f'  File "{name}", line {lineno}, in {function}')
            lines = sources[name]
            if is_a(lineno, int) and 0 < lineno <= size(lines) and lines[lineno - 1].strip():
                out.append("    " + lines[lineno - 1].strip()[:200])
            if repeats > 1:
                out.append(f"  [Previous line repeated {repeats - 1} more times]")
        out.append(summary)
        return "\n".join(out)

    def finish(status: str, exc: BaseException | None = None, result: str | None = None) -> None:
        state["done"] = True
        if getpid() != harness_pid:
            exit_(0)  # a child the cell forked: only the harness reports
        try:
            setitimer(real_timer, 0)
            flush()
            fields = ["end", "status=" + status, f"cell={state['cell']}"]
            for name, fd in (("stdout", captures[0]), ("stderr", captures[1])):
                head, tail, length, end = read_capture(fd)
                fields.append(excerpt(name, head, tail, length))
                if end >= file_limit:
                    fields.append("flooded=1")
            if result is not None:
                fields.append(excerpt("result", result[:keep], result[-keep:], size(result)))
            if exc is not None:
                summary = describe(exc)
                fields.append("error=" + hexed(summary) + " traceback=" + hexed(format_traceback(exc, summary)))
            send(" ".join(fields))
        except base_exception:
            exit_(1)
        exit_(0)

    def on_limit(signum: int, frame: object) -> None:
        if not state["done"]:
            finish("timeout" if signum == alarm else "cpu")

    # The cells run in a fresh `__main__` module, as in a notebook (pickle and typing find what they define).
    cell_module = kind(sys)("__main__")
    namespace = cell_module.__dict__
    namespace["__builtins__"] = builtins
    sys.modules["__main__"] = cell_module
    random.seed(int(seed))
    signal.signal(signal.SIGALRM, on_limit)
    signal.signal(signal.SIGXCPU, on_limit)
    setitimer(real_timer, seconds)

    dup2(null, 1)
    dup2(null, 2)
    for index, (name, text) in numbered(replay):
        state["cell"] = index
        send(f"run {index}")
        try:
            run(comp(text, name, "exec", 0, True), namespace)
        except base_exception as exc:
            finish("replay", exc)
    flush()  # what the replay left in the buffers goes to /dev/null, not into the new cell's output
    dup2(captures[0], 1)
    dup2(captures[1], 2)
    state["cell"] = size(replay)
    send(f"run {size(replay)}")
    result = None
    try:
        tree = comp(source, filename, "exec", only_ast, True)
        last = tree.body.pop() if tree.body and is_a(tree.body[-1], Expr) else None
        body = comp(tree, filename, "exec", 0, True)
        final = None if last is None else comp(Expression(last.value), filename, "eval", 0, True)
        run(body, namespace)
        value = None if final is None else evaluate(final, namespace)
        if value is not None:
            result = represent(value)
    except base_exception as exc:
        finish("error", exc)
    finish("ok", result=result)


if __name__ == "__main__":
    main()
