"""The sandbox side of the report protocol that rlvr's harnesses share (the code verifier's and the python tool's).

A harness runs as `main.py` in the sandbox and imports this module from beside it (it travels as
`rlvr.sandbox.programs.HARNESS_FILES`); standard library only. The host sends the job on stdin, its first line a
random nonce, and trusts only report lines that carry the nonce:

* `take_job()` reads all of stdin before any untrusted code runs, then leaves it in no file or descriptor that code
  can reach (it empties the shared stdin file and points fd 0 at /dev/null). It returns the nonce, the rest of the
  job, a duplicate of stdout for the reports and an open /dev/null descriptor, so the harness can send the
  untrusted code's own fd 1 there and its prints cannot flood or interleave with the report.
* `reporter(nonce, fd)` returns the function that writes one `\\n<nonce> <text>\\n` line. Call it before untrusted
  code runs: everything it uses is bound then, in its closure, so code that later patches `os.write` or this module
  cannot change what it writes. It formats with str operations only, which no program can patch.
"""

import os
from collections.abc import Callable


def take_job() -> tuple[str, str, int, int]:
    """(nonce, rest of stdin, report fd, /dev/null fd); stdin is left empty and fd 0 on /dev/null."""
    chunks = []
    while True:
        chunk = os.read(0, 1 << 16)
        if not chunk:
            break
        chunks.append(chunk)
    try:
        os.ftruncate(0, 0)
    except OSError:
        pass
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    nonce, _, job = b"".join(chunks).decode("utf-8").partition("\n")
    return nonce, job, os.dup(1), null


def reporter(nonce: str, fd: int) -> Callable[[str], None]:
    """The function that writes one report line to ``fd``: a newline, the nonce, a space, the text, a newline."""
    write = os.write

    def send(text: str) -> None:
        data = ("\n" + nonce + " " + text + "\n").encode()
        while data:
            data = data[write(fd, data) :]

    return send
