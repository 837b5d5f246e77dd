"""Whose garbage the load benchmark's full collections free: the reference cycles, by library.

A full collection holds the loop for as long as it takes to scan every tracked object and free
what it found unreachable. bench/load.py times each one and counts what it freed; this runs the
same load with the collector keeping what it would free (gc.DEBUG_SAVEALL, during full
collections only, and one more full collection after the run), groups the kept objects into
connected components (a cycle with everything it holds) and names each component after the
first of these it holds an object of: the simulated Discord (simcord), discord.py, the bot,
SQLAlchemy; else "other". simcord comes first because it wraps every callback the bot schedules
in a record that refers to its own handle (record -> handle -> closure -> record), which ties
whatever the callback holds into that cycle; a real Discord adds no such cycle.

Kept garbage stays alive until the end, so this run's timings are not the load benchmark's:
only its counts are read.

    python -m bench.garbage --users 100 --jobs 1000 --burst 50 --gap 0.25
"""

from __future__ import annotations

import asyncio
import gc
import sys
from collections import Counter
from typing import Any

from bench import common, load

OWNERS = (("simcord", "the simulated Discord (simcord)"), ("discord", "discord.py"), ("bot", "the bot"),
          ("sqlalchemy", "SQLAlchemy"))


class SavedGarbage:
    """A gc callback: while a full collection runs, what it finds unreachable is kept in
    gc.garbage instead of freed; afterwards it is moved here, each object once (kept garbage
    is found again by the next collection)."""

    def __init__(self) -> None:
        self.objects: list[Any] = []
        self.freed_by_collection: list[int] = []
        self._seen: set[int] = set()

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            gc.set_debug(gc.DEBUG_SAVEALL)
            return
        gc.set_debug(0)
        new = [o for o in gc.garbage if id(o) not in self._seen]
        self._seen.update(id(o) for o in new)
        self.objects.extend(new)
        self.freed_by_collection.append(len(new))
        gc.garbage.clear()


def owner_of(component: list[Any]) -> str:
    modules = {type(o).__module__.split(".", 1)[0] for o in component}
    return next((label for module, label in OWNERS if module in modules), "other")


def components(objects: list[Any]) -> list[list[Any]]:
    """The objects grouped by reference, either way (union-find over gc.get_referents)."""
    index = {id(o): i for i, o in enumerate(objects)}
    parent = list(range(len(objects)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, o in enumerate(objects):
        for referent in gc.get_referents(o):
            j = index.get(id(referent))
            if j is not None:
                parent[root(i)] = root(j)
    groups: dict[int, list[Any]] = {}
    for i, o in enumerate(objects):
        groups.setdefault(root(i), []).append(o)
    return list(groups.values())


def attribution(objects: list[Any]) -> dict[str, Any]:
    by_owner: dict[str, dict[str, Any]] = {}
    for component in components(objects):
        entry = by_owner.setdefault(owner_of(component), {"objects": 0, "components": 0, "types": Counter()})
        entry["objects"] += len(component)
        entry["components"] += 1
        entry["types"].update(f"{type(o).__module__}.{type(o).__qualname__}" for o in component)
    total = len(objects)
    return {
        owner: {
            "objects": entry["objects"],
            "share": round(entry["objects"] / total, 3),
            "components": entry["components"],
            "most_common_types": dict(entry["types"].most_common(8)),
        }
        for owner, entry in sorted(by_owner.items(), key=lambda item: -item[1]["objects"])
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = load.parse_args(argv, "garbage", __doc__.splitlines()[0])
    saved = SavedGarbage()
    gc.callbacks.append(saved)
    try:
        load_results = asyncio.run(load.run(args))
        in_run = list(saved.freed_by_collection)
        gc.collect()  # what the run left for a later collection counts too
    finally:
        gc.callbacks.remove(saved)
        gc.set_debug(0)
    results = {
        "jobs_by_status": load_results["jobs_by_status"],
        "none_lost": load_results["lost"]["none_lost"],
        "full_collections_freed_objects": in_run,
        "freed_after_the_run": sum(saved.freed_by_collection) - sum(in_run),
        "freed_objects": len(saved.objects),
        "freed_objects_per_job": round(len(saved.objects) / max(1, args.jobs), 1),
        "by_owner": attribution(saved.objects),
    }
    saved.objects.clear()
    common.write_result("garbage", args.device, load.settings_of(args), results, args.output_dir)
    print(f"\ngarbage: {results['freed_objects']} objects freed by full collections "
          f"({results['freed_objects_per_job']} per job); in-run collections freed {in_run}")
    common.print_table(
        "whose cycles", ["owner", "objects", "share", "components"],
        [[owner, e["objects"], e["share"], e["components"]] for owner, e in results["by_owner"].items()],
    )
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
