"""FastAPI + Redis pub/sub relay peer for chat-bench (`--protocol raw`): the architecture
this project replaces (FastAPI WebSockets, Redis pub/sub between processes), at its
smallest. A socket opened at /ws/<room> is in that room; every text frame it sends is
published on the Redis channel `room:<room>`, and every process relays what its one
subscription receives to its own sockets of that room, the sender included. Nothing is
stored: no history, no ordering or delivery guarantees beyond TCP's and Redis
pub/sub's.

    REDIS_URL=redis://127.0.0.1:6379 PORT=3003 python relay.py
"""

import asyncio
import os
import re
import sys
from contextlib import asynccontextmanager

import redis.asyncio as aioredis
import uvicorn
from fastapi import FastAPI, WebSocket, WebSocketDisconnect

ROOM = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")

redis = aioredis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379"))
pubsub = redis.pubsub(ignore_subscribe_messages=True)
# This process's sockets per room; a room is subscribed while it has one.
rooms: dict[str, set[WebSocket]] = {}


async def relay_forever() -> None:
    """Sends every message of the subscription to this process's sockets of its room.
    A broken subscription ends the process: a relay that silently stopped relaying
    would look like lost messages to the benchmark."""
    try:
        await relay_messages()
    except Exception as e:  # noqa: BLE001 - any failure is fatal here
        print(f"relay: subscription failed: {e!r}", file=sys.stderr, flush=True)
        os._exit(1)


async def relay_messages() -> None:
    async for message in pubsub.listen():
        if message["type"] != "message":
            continue
        room = message["channel"].decode()[len("room:") :]
        text = message["data"].decode()
        for ws in list(rooms.get(room, ())):
            try:
                await ws.send_text(text)
            except Exception:  # closed meanwhile: its handler removes it
                pass


@asynccontextmanager
async def lifespan(_app: FastAPI):
    # listen() needs a subscribed connection: one channel nobody publishes on.
    await pubsub.subscribe("relay:started")
    relay = asyncio.get_running_loop().create_task(relay_forever())
    yield
    relay.cancel()


app = FastAPI(lifespan=lifespan)


@app.websocket("/ws/{room}")
async def member(ws: WebSocket, room: str) -> None:
    if not ROOM.match(room):
        await ws.close(code=1008)
        return
    await ws.accept()
    members = rooms.setdefault(room, set())
    if not members:
        await pubsub.subscribe(f"room:{room}")
    members.add(ws)
    try:
        while True:
            await redis.publish(f"room:{room}", await ws.receive_text())
    except WebSocketDisconnect:
        pass
    finally:
        members.discard(ws)
        if not members and rooms.get(room) is members:
            del rooms[room]
            await pubsub.unsubscribe(f"room:{room}")
            if room in rooms:
                # Somebody joined while we unsubscribed; their subscribe may have gone first.
                await pubsub.subscribe(f"room:{room}")


if __name__ == "__main__":
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(os.environ.get("PORT", "3003")),
        log_level="warning",
        loop="uvloop",
        http="httptools",
        ws="websockets-sansio",
    )
