use luo_proto::ops::{HandleRequest, Preserve, Preserved};
use std::time::Instant;
fn main() {
    let n = 1_000_000;
    let one = luo_proto::encode_request(
        &Preserve {
            tokens: vec![12345],
        },
        1,
    )
    .unwrap();
    let many = luo_proto::encode_request(
        &Preserve {
            tokens: (1..=253).collect(),
        },
        253,
    )
    .unwrap();
    for (name, bytes, fds, k) in [("one", &one, 1, n), ("253", &many, 253, n / 100)] {
        let t = Instant::now();
        for _ in 0..k {
            let r: HandleRequest =
                luo_proto::decode_request(std::hint::black_box(bytes), fds).unwrap();
            std::hint::black_box(r);
        }
        println!(
            "decode {name}: {:.0} ns",
            t.elapsed().as_nanos() as f64 / k as f64
        );
        let t = Instant::now();
        for _ in 0..k {
            let r = luo_proto::encode_reply(&Preserved { preserved: 1 }, 0).unwrap();
            std::hint::black_box(r);
        }
        println!(
            "encode reply: {:.0} ns",
            t.elapsed().as_nanos() as f64 / k as f64
        );
        let t = Instant::now();
        for _ in 0..k {
            let r = luo_proto::encode_request(
                &Preserve {
                    tokens: vec![12345],
                },
                1,
            )
            .unwrap();
            std::hint::black_box(r);
        }
        println!(
            "encode request: {:.0} ns",
            t.elapsed().as_nanos() as f64 / k as f64
        );
    }
    println!("{}", String::from_utf8_lossy(&one));
    let rep = luo_proto::encode_reply(&Preserved { preserved: 1 }, 0).unwrap();
    let t = Instant::now();
    for _ in 0..n {
        let r: Preserved = luo_proto::decode_reply(std::hint::black_box(&rep), 0).unwrap();
        std::hint::black_box(r);
    }
    println!(
        "decode reply: {:.0} ns",
        t.elapsed().as_nanos() as f64 / n as f64
    );
    let t = Instant::now();
    for _ in 0..n {
        luo_proto::decode_request::<HandleRequest>(
            std::hint::black_box(b"{\"v\":1,\"fds\":1,\"op\":\"preserv\",\"tokens\":[12345]}"),
            1,
        )
        .unwrap_err();
    }
    println!(
        "decode unknown op: {:.0} ns",
        t.elapsed().as_nanos() as f64 / n as f64
    );
}
#[allow(dead_code)]
fn reply_bench() {}
