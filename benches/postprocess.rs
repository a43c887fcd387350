//! Post-processing of one 2048x2048 render, step by step: composite (provider output upscaled
//! 1024 → 2048 with Lanczos3, feathered mask, blend), preview (2048 → 512), normal and
//! roughness maps, PNG encoding, and every step together as the pipeline runs them.
//!
//! Run: `cargo bench --features eval --bench postprocess` (the inputs come from the procedural
//! textures of the `eval` feature). The comparison with libvips is
//! `scripts/bench-postprocess.sh`; figures are recorded in BENCHMARKS.md.

use criterion::{Criterion, criterion_group, criterion_main};
use design_render::imaging::bench::{FEATHER_RADIUS, Inputs, SPEC};
use design_render::imaging::{codec, composite, maps, resize};

fn steps(c: &mut Criterion) {
    let inputs = Inputs::generate();
    let Inputs { base, generated, hole } = &inputs;
    let mut group = c.benchmark_group("postprocess_2048");
    group.sample_size(10);

    let compose = || composite::compose(base, generated.clone(), Some(hole), FEATHER_RADIUS);
    group.bench_function("composite", |b| b.iter(compose));
    let blended = compose();
    group.bench_function("preview_512", |b| b.iter(|| resize::resize_rgba(&blended, 512, 512)));
    let both = maps::MapSpec {
        normal: true,
        roughness: true,
        normal_strength: SPEC.normal_strength,
    };
    group.bench_function("normal_and_roughness_maps", |b| b.iter(|| maps::derive(&blended, both)));
    group.bench_function("encode_composite_png", |b| b.iter(|| codec::encode_rgba_png(&blended)));
    group.bench_function("all_steps", |b| b.iter(|| inputs.postprocess(&SPEC)));
    group.finish();
}

criterion_group!(benches, steps);
criterion_main!(benches);
