//! Throughput of PAN detection and masking on the two kinds of input the
//! gateway sees most: prose without digits, and JSON-like rows dense with
//! numbers (IDs, timestamps, amounts) of which a few are card numbers.
//!
//! `cargo bench -p hoop-common` prints MB/s for each.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use hoop_common::mask::{Masker, Strategy};
use hoop_common::pan::{contains_pan, find_pans};

const SIZE: usize = 1 << 20;

/// 1 MB of English-like text with no digit at all.
fn text_without_digits() -> Vec<u8> {
    let words = [
        "the ",
        "gateway ",
        "masks ",
        "every ",
        "card ",
        "number ",
        "before ",
        "it ",
        "reaches ",
        "an ",
        "agent, ",
        "and ",
        "records ",
        "who ",
        "asked ",
        "what.\n",
        "Cardholder ",
        "data ",
        "stays ",
        "inside ",
        "(the ",
        "database) ",
        "unless ",
        "a ",
        "person ",
        "approves; ",
        "notes: ",
        "\"ok\" ",
    ];
    let mut out = Vec::with_capacity(SIZE + 16);
    let mut state = 0x2545_f491_u32;
    while out.len() < SIZE {
        state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        out.extend_from_slice(words[(state >> 16) as usize % words.len()].as_bytes());
    }
    out.truncate(SIZE);
    out
}

/// 1 MB of JSON records: UUIDs, epoch-millisecond timestamps, amounts,
/// order numbers, phone numbers, and a card number in one record of four.
fn json_records() -> Vec<u8> {
    let pans = [
        "4111111111111111",
        "5555 5555 5555 4444",
        "378282246310005",
        "6011-1111-1111-1117",
        "3530111333300000",
    ];
    let mut out = Vec::with_capacity(SIZE + 512);
    let mut state = 0x9e37_79b9_u32;
    let mut next = || {
        state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        state
    };
    let mut record = 0u64;
    while out.len() < SIZE {
        record += 1;
        let (a, b, c) = (next(), next(), next());
        let card = if record % 4 == 0 {
            pans[(a as usize >> 8) % pans.len()].to_owned()
        } else {
            format!("**** **** **** {:04}", b % 10_000)
        };
        let line = format!(
            "{{\"id\":{record},\"uuid\":\"{a:08x}-{:04x}-4{:03x}-a{:03x}-{b:08x}{:04x}\",\
             \"ts\":{},\"amount\":{}.{:02},\"order\":\"ORD-2024-{:06}\",\
             \"phone\":\"+1 415 555 {:04}\",\"card\":\"{card}\",\"note\":\"paid by card\"}}\n",
            c & 0xffff,
            a & 0xfff,
            b & 0xfff,
            c >> 16,
            1_700_000_000_000u64 + u64::from(c),
            a % 100_000,
            b % 100,
            c % 1_000_000,
            a % 10_000,
        );
        out.extend_from_slice(line.as_bytes());
    }
    out.truncate(SIZE);
    out
}

fn bench_inputs(c: &mut Criterion) {
    let masker = Masker::new(Strategy::PanLast4, None).expect("pan_last4 needs no key");
    let inputs = [
        ("text_without_digits", text_without_digits()),
        ("json_records", json_records()),
    ];
    for (name, input) in &inputs {
        let text = std::str::from_utf8(input).expect("generated input is ASCII");
        let mut group = c.benchmark_group(*name);
        group.throughput(Throughput::Bytes(input.len() as u64));
        group.bench_function("find_pans", |b| b.iter(|| find_pans(black_box(input))));
        group.bench_function("mask_text", |b| {
            b.iter(|| masker.mask_text(black_box(text)).len())
        });
        // contains_pan stops at the first card, so it is measured where it
        // has to read everything: rows that hold no card (already masked).
        let clean = masker.mask_text(text).into_owned();
        group.bench_function("contains_pan_clean", |b| {
            b.iter(|| contains_pan(black_box(clean.as_bytes())))
        });
        group.finish();
    }
}

criterion_group!(benches, bench_inputs);
criterion_main!(benches);
