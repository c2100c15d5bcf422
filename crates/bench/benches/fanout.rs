//! The fan-out path inside one gateway: building a `message` frame, the in-process bus
//! (publish -> the subscribed gateway's signal queue), and a room sequencer's broadcast
//! into its members' bounded outbound queues, drained by their response bodies.

use std::hint::black_box;
use std::pin::Pin;
use std::task::{Context, Waker};

use actix_web::body::{BoxBody, MessageBody};

use bytestring::ByteString;
use chat_bench::wire::sample_message as message;
use chat_gateway::conn::{Conn, ConnBody};
use chat_gateway::fanout::memory::InProcessBus;
use chat_gateway::fanout::{FanOut, Signal};
use chat_gateway::lane::Lane;
use chat_gateway::rooms::message_frame;
use chat_model::{RoomId, UserId};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

fn frame(c: &mut Criterion) {
    let msg = message();
    c.bench_function("message_frame", |b| {
        b.iter(|| message_frame(black_box(&msg)))
    });
}

fn bus(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let room = RoomId::parse("bench-room-7").expect("valid room");
    let payload: ByteString = message_frame(&message());
    let mut g = c.benchmark_group("in_process_bus_publish_receive");
    g.throughput(Throughput::Elements(1));
    for gateways in [1usize, 4] {
        let bus = InProcessBus::new();
        let (handles, mut receivers): (Vec<_>, Vec<_>) =
            (0..gateways).map(|_| bus.attach()).unzip();
        for fanout in &handles {
            rt.block_on(fanout.subscribe(&room)).expect("subscribe");
        }
        g.bench_with_input(BenchmarkId::from_parameter(gateways), &gateways, |b, _| {
            b.iter(|| {
                rt.block_on(async {
                    handles[0]
                        .publish(&room, payload.clone())
                        .await
                        .expect("publish");
                    for rx in receivers.iter_mut() {
                        if let Some(Signal::Event { payload, .. }) = rx.recv().await {
                            black_box(payload);
                        }
                    }
                })
            })
        });
    }
    g.finish();
}

fn broadcast(c: &mut Criterion) {
    let msg = message();
    let user = UserId::parse("bench-u1").expect("valid user");
    // Not run: the loop below does what a lane's task does, on this thread.
    let lane = Lane::new();
    let mut g = c.benchmark_group("room_broadcast_and_drain");
    for members in [10usize, 100, 1000] {
        let conns: Vec<_> = (0..members as u64)
            .map(|id| Conn::new(id, user.clone(), lane.clone()))
            .collect();
        // actix-ws's body only stands in for the close signal each `ConnBody` holds.
        let mut bodies: Vec<_> = conns
            .iter()
            .map(|conn| ConnBody::new(conn.clone(), BoxBody::new(()), Default::default()))
            .collect();
        let mut cx = Context::from_waker(Waker::noop());
        g.throughput(Throughput::Elements(members as u64));
        g.bench_with_input(BenchmarkId::from_parameter(members), &members, |b, _| {
            b.iter(|| {
                // What a lane does per message: one frame, shared by every member's queue on
                // its worker; then what each connection's body encodes for the socket.
                let frame = message_frame(&msg);
                for conn in &conns {
                    black_box(conn.try_deliver(&frame));
                }
                for body in bodies.iter_mut() {
                    let _ = black_box(Pin::new(body).poll_next(&mut cx));
                }
            });
        });
    }
    g.finish();
}

criterion_group!(benches, frame, bus, broadcast);
criterion_main!(benches);
