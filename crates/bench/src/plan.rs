//! What a run is: the target, the connections, their rooms, and which process holds
//! which connection.
//!
//! Everything here is a pure function of the [`Plan`] and a global connection index, so
//! the coordinator and every worker process agree on who is who without talking.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

/// The client protocol spoken to the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// This project's protocol v1 at `/v1/ws` (see `docs/protocol.md`).
    Chat,
    /// Plain text at `/ws/<room>`: every text frame is relayed to the room's sockets.
    Raw,
    /// Socket.IO v4 over the WebSocket transport (engine.io v4 framing): `join` with an
    /// ack, `msg` events `[room, text]` relayed to the room.
    Socketio,
}

/// How connections authenticate (chat protocol; peers ignore it but get `?user=` too).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Auth {
    /// `?user=<id>`, for gateways in dev mode.
    Dev,
    /// `?token=<JWT>`, HS256 minted from this secret (claims `sub`, `exp`).
    Jwt { secret: String },
}

/// Everything workers need to open and drive their connections. Sent to worker
/// processes as JSON on stdin (never on the command line, which other users can read).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    /// Base URLs (`ws://host:port`, optionally with a path prefix); connection `i` uses
    /// `targets[i % len]`.
    pub targets: Vec<String>,
    pub protocol: Protocol,
    pub auth: Auth,
    /// Total connections of the run (membership with `members_per_room` depends on it).
    pub connections: u32,
    /// Rooms; 0 = connections join nothing (idle measurements).
    pub rooms: u32,
    /// Members per room. `None`: each connection joins exactly one room, `i % rooms`.
    /// `Some(m)`: `rooms * m` membership slots, slot `j` puts connection `j % connections`
    /// into room `j / m`, so connections may be in several rooms.
    pub members_per_room: Option<u32>,
    /// Bytes of each message body (at least what the header needs).
    pub body_size: usize,
    /// Local addresses the client sockets bind to; connection `i` uses `sources[i % len]`.
    /// Each source address has its own ephemeral port range.
    pub sources: Vec<Ipv4Addr>,
    /// Prefix of room and user names, unique per run so runs never share rooms.
    pub run_id: String,
    /// Connections a worker opens at the same time.
    pub connect_concurrency: usize,
    /// Timeout for one connection's connect, handshake and joins.
    pub connect_timeout_ms: u64,
    /// After the send phase: stop draining once nothing arrived for this long...
    pub quiet_ms: u64,
    /// ... or after this long at most.
    pub drain_max_ms: u64,
}

impl Plan {
    /// The rooms connection `conn` joins.
    pub fn rooms_of(&self, conn: u32) -> Vec<u32> {
        if self.rooms == 0 {
            return Vec::new();
        }
        match self.members_per_room {
            None => vec![conn % self.rooms],
            Some(m) => {
                let slots = u64::from(self.rooms) * u64::from(m);
                let n = u64::from(self.connections.max(1));
                let mut rooms: Vec<u32> = (u64::from(conn)..slots)
                    .step_by(n as usize)
                    .map(|j| (j / u64::from(m.max(1))) as u32)
                    .collect();
                rooms.dedup();
                rooms
            }
        }
    }

    /// The user id of connection `conn`.
    pub fn user(&self, conn: u32) -> String {
        format!("{}-u{conn}", self.run_id)
    }

    /// The name of room `room`. [`room_index`] reverses it.
    pub fn room_name(&self, room: u32) -> String {
        format!("{}-{room}", self.run_id)
    }

    /// The source address of connection `conn`.
    pub fn source(&self, conn: u32) -> Ipv4Addr {
        if self.sources.is_empty() {
            Ipv4Addr::UNSPECIFIED
        } else {
            self.sources[conn as usize % self.sources.len()]
        }
    }

    /// The index into `targets` of connection `conn`.
    pub fn target(&self, conn: u32) -> usize {
        conn as usize % self.targets.len().max(1)
    }

    /// Members of each room, over connections `0..connections`.
    pub fn members(&self) -> Vec<u32> {
        let mut members = vec![0u32; self.rooms as usize];
        for conn in 0..self.connections {
            for room in self.rooms_of(conn) {
                members[room as usize] += 1;
            }
        }
        members
    }
}

/// The room index in a room name made by [`Plan::room_name`].
pub fn room_index(name: &str) -> Option<u32> {
    name.rsplit('-').next()?.parse().ok()
}

/// A contiguous range of global connection indices held by one worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Share {
    pub first: u32,
    pub count: u32,
}

/// Splits `count` connections starting at `first` over `workers` near-equal shares.
pub fn shares(first: u32, count: u32, workers: u32) -> Vec<Share> {
    let workers = workers.max(1);
    (0..workers)
        .map(|w| {
            let lo = u64::from(count) * u64::from(w) / u64::from(workers);
            let hi = u64::from(count) * u64::from(w + 1) / u64::from(workers);
            Share {
                first: first + lo as u32,
                count: (hi - lo) as u32,
            }
        })
        .filter(|s| s.count > 0)
        .collect()
}

/// Worker processes needed so that none holds more than `per_worker` connections.
pub fn workers_for(count: u32, per_worker: u32) -> u32 {
    count.div_ceil(per_worker.max(1)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(connections: u32, rooms: u32, members: Option<u32>) -> Plan {
        Plan {
            targets: vec!["ws://127.0.0.1:1".into()],
            protocol: Protocol::Chat,
            auth: Auth::Dev,
            connections,
            rooms,
            members_per_room: members,
            body_size: 64,
            sources: vec![Ipv4Addr::LOCALHOST],
            run_id: "b-x".into(),
            connect_concurrency: 1,
            connect_timeout_ms: 1,
            quiet_ms: 1,
            drain_max_ms: 1,
        }
    }

    #[test]
    fn default_membership_is_one_room_each() {
        let p = plan(1000, 10, None);
        assert_eq!(p.members(), vec![100; 10]);
        assert_eq!(p.rooms_of(13), vec![3]);
        assert!(plan(10, 0, None).rooms_of(3).is_empty());
    }

    #[test]
    fn members_per_room_spreads_slots_over_connections() {
        // 4 rooms x 5 members over 10 connections: two rooms each.
        let p = plan(10, 4, Some(5));
        assert_eq!(p.members(), vec![5; 4]);
        assert_eq!(p.rooms_of(0), vec![0, 2]);
        assert_eq!(p.rooms_of(7), vec![1, 3]);
        // Fewer slots than connections: some connections join nothing.
        let p = plan(10, 2, Some(3));
        assert_eq!(p.members(), vec![3, 3]);
        assert!(p.rooms_of(9).is_empty());
    }

    #[test]
    fn names_round_trip_and_shares_cover_everything() {
        let p = plan(1, 1, None);
        assert_eq!(room_index(&p.room_name(42)), Some(42));
        let s = shares(100, 10, 3);
        assert_eq!(s.iter().map(|s| s.count).sum::<u32>(), 10);
        assert_eq!(s[0].first, 100);
        assert_eq!(s[2].first + s[2].count, 110);
        assert_eq!(workers_for(18_000, 15_000), 2);
        assert_eq!(workers_for(0, 15_000), 1);
    }
}
