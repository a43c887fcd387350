//! Post-processing of one 2048x2048 render, step by step: composite (provider output upscaled
//! 1024 → 2048 with Lanczos3, feathered mask, blend), preview (2048 → 512), normal and
//! roughness maps, PNG encoding, and the whole `render_assets` call as the pipeline runs it.
//!
//! Run: `cargo bench --features eval --bench postprocess` (the inputs come from the procedural
//! textures of the `eval` feature). Figures are recorded in BENCHMARKS.md.

use criterion::{Criterion, criterion_group, criterion_main};
use design_render::imaging::inpaint::textures::{MaskKind, TextureKind, mask, texture};
use design_render::imaging::{self, AssetSpec, codec, composite, maps, resize};

const SIDE: u32 = 2048;

fn inputs() -> (image::RgbaImage, image::RgbaImage, image::GrayImage) {
    let base = texture(TextureKind::Brick, SIDE, SIDE, 7);
    let generated = texture(TextureKind::Wood, SIDE / 2, SIDE / 2, 9);
    let hole = mask(MaskKind::LargeBlob, SIDE, SIDE, 7);
    // The libvips comparison (benches/sharp/bench.js) reads the very same inputs.
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-inputs");
    if std::fs::create_dir_all(&dir).is_ok() {
        let _ = base.save(dir.join("base.png"));
        let _ = generated.save(dir.join("generated.png"));
        let _ = hole.save(dir.join("hole.png"));
    }
    (base, generated, hole)
}

fn steps(c: &mut Criterion) {
    let (base, generated, hole) = inputs();
    let mut group = c.benchmark_group("postprocess_2048");
    group.sample_size(10);

    group.bench_function("composite", |b| {
        b.iter(|| {
            let upscaled = resize::resize_rgba(&generated, SIDE, SIDE);
            composite::blend(&base, &upscaled, &composite::feather(&hole, 4))
        })
    });
    let upscaled = resize::resize_rgba(&generated, SIDE, SIDE);
    let blended = composite::blend(&base, &upscaled, &composite::feather(&hole, 4));
    group.bench_function("preview_512", |b| b.iter(|| resize::resize_rgba(&blended, 512, 512)));
    group.bench_function("normal_map", |b| {
        b.iter(|| maps::normal_map(&maps::height_field(&blended), SIDE, SIDE, 2.0))
    });
    group.bench_function("roughness_map", |b| {
        b.iter(|| maps::roughness_map(&maps::height_field(&blended), SIDE, SIDE))
    });
    group.bench_function("encode_composite_png", |b| b.iter(|| codec::encode_rgba_png(&blended)));
    let spec = AssetSpec {
        high_res: (SIDE, SIDE),
        preview: 512,
        fit: design_render::imaging::Fit::Inside,
        normal_map: true,
        roughness_map: true,
        normal_strength: 2.0,
    };
    group.bench_function("all_steps", |b| {
        b.iter(|| {
            let upscaled = resize::resize_rgba(&generated, SIDE, SIDE);
            let composite = composite::blend(&base, &upscaled, &composite::feather(&hole, 4));
            imaging::render_assets(&composite, &spec)
        })
    });
    group.finish();
}

criterion_group!(benches, steps);
criterion_main!(benches);
