//! `cargo bench -p hoop-policy`: the DataRow masker (rows/s = 1 / time per
//! row; MB/s from the reported throughput) for rows with and without card
//! numbers, and a classification cache hit.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use hoop_common::mask::{Masker, Strategy};
use hoop_policy::{classify, mask_data_row, ClassifyCache, ColumnPolicy, MaskedColumn, RowShape};

const PAYMENTS_OID: u32 = 16_384;
const TEXT: u32 = 25;
const INT8: u32 = 20;
const NUMERIC: u32 = 1700;
const TIMESTAMPTZ: u32 = 1184;

/// `public.payments(id, card_number, cardholder, amount, note, created_at)`.
fn row_description() -> Vec<u8> {
    let columns = [
        ("id", 1i16, INT8),
        ("card_number", 2, TEXT),
        ("cardholder", 3, TEXT),
        ("amount", 4, NUMERIC),
        ("note", 5, TEXT),
        ("created_at", 6, TIMESTAMPTZ),
    ];
    let mut body = (columns.len() as i16).to_be_bytes().to_vec();
    for (name, attnum, type_oid) in columns {
        body.extend_from_slice(name.as_bytes());
        body.push(0);
        body.extend_from_slice(&PAYMENTS_OID.to_be_bytes());
        body.extend_from_slice(&attnum.to_be_bytes());
        body.extend_from_slice(&type_oid.to_be_bytes());
        body.extend_from_slice(&(-1i16).to_be_bytes());
        body.extend_from_slice(&(-1i32).to_be_bytes());
        body.extend_from_slice(&0i16.to_be_bytes());
    }
    body
}

fn data_row(values: &[&str]) -> Vec<u8> {
    let mut body = (values.len() as i16).to_be_bytes().to_vec();
    for value in values {
        body.extend_from_slice(&(value.len() as i32).to_be_bytes());
        body.extend_from_slice(value.as_bytes());
    }
    body
}

fn policy(declared: bool) -> ColumnPolicy {
    let columns = [MaskedColumn {
        relid: PAYMENTS_OID,
        attnum: 2,
        schema_name: "public".to_owned(),
        table_name: "payments".to_owned(),
        column_name: "card_number".to_owned(),
        strategy: "pan_last4".to_owned(),
    }];
    let content = Masker::new(Strategy::PanLast4, None).expect("pan_last4 needs no key");
    let columns: &[MaskedColumn] = if declared { &columns } else { &[] };
    ColumnPolicy::new(columns, &[], content, None).expect("valid policy")
}

fn bench_data_rows(c: &mut Criterion) {
    let description = row_description();
    let declared = RowShape::from_row_description(&description, &policy(true)).expect("shape");
    let undeclared = RowShape::from_row_description(&description, &policy(false)).expect("shape");
    let note = "refund requested by customer, ticket 8812, see thread from 2024-05-01";
    let clean = data_row(&[
        "100042",
        "************1111",
        "Jane Q. Cardholder",
        "1234.56",
        note,
        "2024-05-01 12:34:56.789+00",
    ]);
    let with_pan = data_row(&[
        "100042",
        "4111111111111111",
        "Jane Q. Cardholder",
        "1234.56",
        note,
        "2024-05-01 12:34:56.789+00",
    ]);
    // The same row in binary (what asyncpg and tokio-postgres ask for):
    // int8, text, numeric, timestamptz decoded by type.
    let binary_shape = undeclared.with_result_formats(&[1]).expect("binary shape");
    let mut amount = Vec::new();
    for word in [2i16, 0, 0, 2, 1234, 5600] {
        amount.extend_from_slice(&word.to_be_bytes());
    }
    let binary_row = |card: &[u8]| {
        let values: [&[u8]; 6] = [
            &100_042i64.to_be_bytes(),
            card,
            b"Jane Q. Cardholder",
            &amount,
            note.as_bytes(),
            &767_795_696_789_000i64.to_be_bytes(),
        ];
        let mut body = (values.len() as i16).to_be_bytes().to_vec();
        for value in values {
            body.extend_from_slice(&(value.len() as i32).to_be_bytes());
            body.extend_from_slice(value);
        }
        body
    };
    let binary_clean = binary_row(b"************1111");
    let binary_pan = binary_row(b"4111111111111111");
    let cases = [
        ("no_pan_forwarded", &undeclared, &clean),
        ("pan_found_by_content", &undeclared, &with_pan),
        ("declared_column", &declared, &with_pan),
        ("binary_no_pan_forwarded", &binary_shape, &binary_clean),
        ("binary_pan_found_by_content", &binary_shape, &binary_pan),
    ];
    let mut group = c.benchmark_group("data_row");
    for (name, shape, row) in cases {
        group.throughput(Throughput::Bytes(row.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| mask_data_row(black_box(shape), black_box(row)))
        });
    }
    group.finish();
}

fn bench_classification(c: &mut Criterion) {
    let sql =
        "SELECT id, card_number, amount FROM payments WHERE amount < 500 ORDER BY id LIMIT 100";
    let mut cache = ClassifyCache::default();
    cache.classify(sql);
    let mut group = c.benchmark_group("classify");
    group.bench_function("cache_hit", |b| b.iter(|| cache.classify(black_box(sql))));
    group.bench_function("parse", |b| b.iter(|| classify(black_box(sql))));
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30);
    targets = bench_data_rows, bench_classification
}
criterion_main!(benches);
