"""Run untrusted, model-written Python in a separate, locked-down process.

Layers, strongest first, each used when this machine allows it (probed once per process):

* Linux namespaces through util-linux ``unshare``: a network namespace whose only interface is a
  loopback that is down, a PID namespace (the sandbox cannot see or signal host processes, and
  everything in it dies with its init), private mount, IPC and UTS namespaces.
* A private root filesystem (``pivot_root``): system directories and the interpreter read-only,
  fresh size-capped tmpfs for the working directory, ``/tmp`` and ``/dev/shm``, a minimal ``/dev``,
  and nothing else of the host (no home directories, no project tree, no test folders).
* Privilege separation: as root, the code runs as a fresh unprivileged uid picked per run, which
  makes ``RLIMIT_NPROC`` bite (it is not enforced for root) and keeps host file permissions in force;
  as a normal user, it runs as a non-root uid inside a nested user namespace, so it holds no
  capabilities over its own mounts.
* ``setrlimit`` caps (address space, CPU, processes, open files, file size, no core dumps),
  ``PR_SET_NO_NEW_PRIVS``, a scrubbed environment, capped output capture and a wall-clock limit that
  kills the whole process group (and with it the namespace).

Without namespaces the rlimits, uid separation (as root) and output and time caps still apply, and a
one-time warning says that the network is not isolated.

The package, by concern: `limits` (what a run may use, what happened to it), `modes` and `isolation` (which layers
this machine offers, probed once), `launch` (staging a run and starting `bootstrap.py`, the program that sets the
layers up inside the namespaces), `supervise` (output caps, the time limit, killing, classifying the end),
`processes` (per-uid process sweeps), `programs` and `harness_protocol` (programs shipped as files that run inside
the sandbox, and the report protocol the harnesses of the code verifier and of the python tool share), `cli`
(`rlvr sandbox run`). It depends on nothing else in rlvr: the code verifier and the tools build on it.
"""

from rlvr.sandbox.isolation import isolation
from rlvr.sandbox.limits import SandboxLimits, SandboxResult
from rlvr.sandbox.modes import IsolationInfo
from rlvr.sandbox.programs import HARNESS_FILES, read_program
from rlvr.sandbox.run import run_file, run_python

__all__ = [
    "HARNESS_FILES",
    "IsolationInfo",
    "SandboxLimits",
    "SandboxResult",
    "isolation",
    "read_program",
    "run_file",
    "run_python",
]
