#!/usr/bin/env python3
"""What one Redis round trip costs the proxy, layer by layer, in instructions.

Every store operation of a message (the connect count and lease, the
grey-list lookup, dupmsg's record and its settling, the lease's release)
is a round trip to Redis.  This counts the user-space instructions one
costs at each layer a check's ``await aio(store.op(...))`` goes through,
against a real redis-server on loopback, one operation after another:

* ``callback``: the floor, a protocol that sends the next command from
  the callback that parsed the last reply (no future, no coroutine): the
  socket calls, one turn of the event loop, hiredis;
* ``resp``: :class:`barricade.state.resp.RespClient` awaited in an asyncio
  task (the reply's future, the task's wake-up at the loop's next turn);
* ``store``: :class:`~barricade.state.redis.RedisStore` (keys, arguments,
  the script's reply), in a task;
* ``metered``: the :class:`~barricade.state.metered.MeteredStore` a running
  Barricade uses, in a task;
* ``check``: the same awaited as a check awaits it, ``aio(...,
  immediate=True)`` in a coroutine Barricade's driver runs
  (:mod:`barricade.drive`), under the reactor.

Each figure is (instructions of a run with N operations − of a run with
none) / N, both under valgrind's callgrind, so start-up and imports cancel
out.  Compare the layers with each other and one checkout with another;
instructions are not time (see bench/README.md).

    python bench/roundtrip.py [--operations 2000] [--layers callback,resp,store,metered,check]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

LAYERS = ("callback", "resp", "store", "metered", "check")


async def _callback(store, n: int) -> None:
    from barricade.state.resp import encode

    proto = store._backend.client._protocol
    payload = encode(["EVALSHA", store._backend.scripts["rate"][0], 1, store.key("rate", "k"),
                      -1, 6000, 10, 1])
    done = asyncio.get_running_loop().create_future()
    left = [n]

    def data_received(data: bytes) -> None:
        proto.reader.feed(data)
        while proto.reader.gets() is not False:
            left[0] -= 1
            if left[0] <= 0:
                done.set_result(None)
                return
            proto.transport.write(payload)

    proto.data_received = data_received
    proto.transport.write(payload)
    await done


async def _layer(layer: str, store, metered, n: int) -> None:
    if layer == "resp":
        backend = store._backend
        for _ in range(n):
            await backend.start_script("rate", [store.key("rate", "k")], [-1, 6000, 10, 1])
    elif layer == "store":
        for _ in range(n):
            await store.rate("k")
    elif layer == "metered":
        for _ in range(n):
            await metered.rate("k")
    elif layer == "callback":
        await _callback(store, n)


def child(layer: str, n: int, url: str) -> None:
    """The measured process: connect, warm up, then ``n`` operations through ``layer``."""
    from barricade.net.loop import Loop
    from barricade.net.reactor import install

    loop = Loop()  # the proxy's own: a turn's commands leave at its end
    asyncio.set_event_loop(loop)
    install(loop)
    from barricade.aio import aio
    from barricade.drive import drive
    from barricade.state.metered import MeteredStore
    from barricade.state.redis import RedisStore

    store = RedisStore(url)
    metered = MeteredStore(store, None)

    async def checks() -> None:
        for _ in range(n):
            await aio(metered.rate("k"), immediate=True)

    async def main() -> None:
        for _ in range(50):  # connected, scripts loaded, caches warm
            await store.rate("k")
        if n == 0:
            return
        if layer != "check":
            await _layer(layer, store, metered, n)
            return
        done = loop.create_future()
        drive(checks(), lambda outcome: done.set_result(outcome))
        outcome = await done
        if hasattr(outcome, "raiseException"):
            outcome.raiseException()

    loop.run_until_complete(main())


def instructions(layer: str, n: int, url: str, workdir: Path) -> int:
    out = workdir / f"callgrind-{layer}-{n}"
    done = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                           sys.executable, __file__, "--child", layer, str(n), url],
                          capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise SystemExit(f"{layer}: the measured process failed:\n{done.stderr[-2000:]}")
    found = re.search(r"^(?:summary|totals):\s+(\d+)", out.read_text(errors="replace"), re.M)
    if found is None:
        raise SystemExit(f"{layer}: no totals in {out}")
    return int(found.group(1))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        child(argv[1], int(argv[2]), argv[3])
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--operations", type=int, default=2000, help="operations counted per layer")
    ap.add_argument("--layers", default=",".join(LAYERS), help="comma-separated, of " + ", ".join(LAYERS))
    args = ap.parse_args(argv)
    layers = [name for name in args.layers.split(",") if name]
    if not layers or not set(layers) <= set(LAYERS) or args.operations < 1:
        ap.error("--layers: a selection of " + ", ".join(LAYERS) + "; --operations at least 1")
    from tests.state import RedisServer

    workdir = Path(tempfile.mkdtemp(prefix="barricade-roundtrip-"))
    redis = RedisServer(workdir / "redis")  # started here, stopped by pid below
    try:
        print(f"One Redis round trip (EVALSHA of the rate script), {args.operations} operations per "
              f"layer, under callgrind; redis-server {redis.url}")
        for layer in layers:
            per = (instructions(layer, args.operations, redis.url, workdir)
                   - instructions(layer, 0, redis.url, workdir)) / args.operations
            print(f"  {layer:<9} {per / 1000:8.1f} k instructions per operation")
    finally:
        redis.stop()
        shutil.rmtree(workdir, ignore_errors=True)  # the dumps are counted: nothing left to read
    return 0


if __name__ == "__main__":
    sys.exit(main())
