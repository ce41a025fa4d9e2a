"""The code verifier's harness: runs as `main.py` in the sandbox, standard library only (see `rlvr.rewards.code`).

Stdin, after the nonce line: `{"program": ..., "tests": [...]}` as JSON. The report line is `<nonce> <one 0/1 per
test> <hex of the program's error>`: plain str operations, nothing the program could have patched. The nonce and
the report line follow `harness_protocol`, which travels beside this file (so this is a program for the sandbox,
not a module to import on the host). os._exit skips the program's atexit handlers and finalizers, which could
otherwise hang or print after the report.
"""

import json
import os

from harness_protocol import reporter, take_job


def main() -> None:
    # The nonce is in no file or descriptor the program can reach; the report goes to a duplicate of stdout, and
    # fd 1 to /dev/null.
    nonce, payload, report_fd, null = take_job()
    os.dup2(null, 1)
    os.close(null)
    job = json.loads(payload)
    program, tests = job["program"], job["tests"]
    del payload, job
    send = reporter(nonce, report_fd)
    run, comp, exit_, base_exception, type_ = exec, compile, os._exit, BaseException, type
    message, number = BaseException.__str__, enumerate

    namespace = {"__name__": "solution"}
    error = ""
    try:
        run(comp(program, "solution.py", "exec"), namespace)
    except base_exception as exc:
        try:
            error = type_(exc).__name__ + ": " + message(exc)
        except base_exception:
            error = "an exception"
        error = error or "an exception"
    bits = []
    if not error:
        for index, test in number(tests):
            try:
                run(comp(test, f"test_{index}.py", "exec"), namespace)
            except base_exception:
                bits.append("0")
            else:
                bits.append("1")
    try:
        send("".join(bits) + " " + error[:500].encode("utf-8", "replace").hex())
    except base_exception:
        exit_(1)
    exit_(0)


if __name__ == "__main__":
    main()
