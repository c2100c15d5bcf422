// Raw WebSocket relay peer for chat-bench (`--protocol raw`): a socket opened at
// /ws/<room> is in that room, and every text frame it sends is relayed to every socket
// of the room, the sender included. The smallest possible chat server: no storage, no
// ordering or delivery guarantees beyond TCP's.
//
//   PORT=3002 node ws.js
"use strict";

const http = require("http");
const { WebSocketServer } = require("ws");

const port = Number(process.env.PORT || 3002);
const rooms = new Map();
const server = http.createServer((req, res) => {
  res.writeHead(404);
  res.end();
});
const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false });

server.on("upgrade", (req, socket, head) => {
  const m = /^\/ws\/([A-Za-z0-9_.:-]{1,128})(\?|$)/.exec(req.url);
  if (!m) {
    socket.destroy();
    return;
  }
  wss.handleUpgrade(req, socket, head, (ws) => {
    const room = m[1];
    let members = rooms.get(room);
    if (!members) {
      members = new Set();
      rooms.set(room, members);
    }
    members.add(ws);
    ws.on("message", (data, isBinary) => {
      if (isBinary) return;
      for (const peer of members) {
        if (peer.readyState === 1) peer.send(data, { binary: false });
      }
    });
    ws.on("close", () => {
      members.delete(ws);
      if (members.size === 0) rooms.delete(room);
    });
  });
});

server.listen(port, "127.0.0.1", () => {
  console.log(`ws relay listening on 127.0.0.1:${port} (pid ${process.pid})`);
});
process.on("SIGTERM", () => process.exit(0));
process.on("SIGINT", () => process.exit(0));
