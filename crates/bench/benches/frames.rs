//! Protocol frames: parsing client frames and serialising server frames, the per-frame
//! CPU cost of every send and every delivery.

use std::hint::black_box;

use chat_bench::wire::sample_message as message;
use chat_model::frame::{ServerFrame, parse_client_frame};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn parse(c: &mut Criterion) {
    let body = chat_bench::wire::body(42, 1000, 1_796_009_028_123_456, 64);
    let send =
        chat_bench::wire::send_frame(chat_bench::Protocol::Chat, "bench-room-7", &body, "42-1000");
    let join = r#"{"type":"join","room":"bench-room-7","since":120,"ref":"j1"}"#;
    let mut g = c.benchmark_group("parse_client_frame");
    g.throughput(Throughput::Elements(1));
    g.bench_function("send_64B_body", |b| {
        b.iter(|| parse_client_frame(black_box(&send)))
    });
    g.bench_function("join", |b| b.iter(|| parse_client_frame(black_box(join))));
    g.bench_function("malformed", |b| {
        b.iter(|| parse_client_frame(black_box(r#"{"type":"send","room":"#)))
    });
    g.finish();
}

fn serialise(c: &mut Criterion) {
    let msg = message();
    let mut g = c.benchmark_group("server_frame_to_json");
    g.throughput(Throughput::Elements(1));
    g.bench_function("message", |b| {
        b.iter(|| ServerFrame::Message(black_box(&msg)).to_json())
    });
    g.bench_function("ack", |b| {
        b.iter(|| {
            ServerFrame::Ack {
                room: &msg.room,
                client_id: &msg.client_id,
                seq: msg.seq,
                id: &msg.id,
                ts: msg.ts,
                duplicate: false,
                reference: None,
            }
            .to_json()
        })
    });
    g.bench_function("timestamp_rfc3339", |b| {
        b.iter(|| black_box(msg.ts).to_rfc3339())
    });
    g.finish();
}

criterion_group!(benches, parse, serialise);
criterion_main!(benches);
