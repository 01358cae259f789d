"""A forked Python worker that only reads: the parent builds a big object
graph and forks; the child walks it without changing a value. Reading still
writes: each object's reference count goes up and down as the child touches
it, so the kernel copies the pages the objects are in (the README's
"Who makes the copies" screenshot; scripts/stacks-screenshots.sh runs it)."""
import os

graph = [{"k": i, "v": [i, str(i)]} for i in range(300000)]
pid = os.fork()
if pid == 0:
    total = sum(d["k"] + len(d["v"][1]) for d in graph)
    os._exit(0 if total > 0 else 1)
_, status = os.waitpid(pid, 0)
raise SystemExit(os.waitstatus_to_exitcode(status))
