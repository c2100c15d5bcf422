// Socket.IO v4 peer for chat-bench (`--protocol socketio`): the minimal chat that the
// Socket.IO designs users migrate from implement. `join` (with an ack) puts the socket
// in a room; `msg` [room, text] is emitted to every socket in the room, the sender
// included (as the chat gateway does). WebSocket transport only.
//
//   PORT=3000 node socketio.js                     # one process, in-memory adapter
//   PORT=3001 REDIS_URL=redis://127.0.0.1:6379 node socketio.js   # Redis adapter
"use strict";

const http = require("http");
const { Server } = require("socket.io");

async function main() {
  const port = Number(process.env.PORT || 3000);
  const httpServer = http.createServer();
  const io = new Server(httpServer, {
    transports: ["websocket"],
    serveClient: false,
    perMessageDeflate: false,
  });
  if (process.env.REDIS_URL) {
    const { createClient } = require("redis");
    const { createAdapter } = require("@socket.io/redis-adapter");
    const pub = createClient({ url: process.env.REDIS_URL });
    const sub = pub.duplicate();
    await Promise.all([pub.connect(), sub.connect()]);
    io.adapter(createAdapter(pub, sub));
  }
  io.on("connection", (socket) => {
    socket.on("join", (room, ack) => {
      socket.join(room);
      if (typeof ack === "function") ack();
    });
    socket.on("msg", (room, text) => {
      io.to(room).emit("msg", room, text);
    });
  });
  httpServer.listen(port, "127.0.0.1", () => {
    console.log(`socket.io listening on 127.0.0.1:${port} (pid ${process.pid})`);
  });
  const stop = () => {
    io.close();
    process.exit(0);
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
