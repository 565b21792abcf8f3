//! Every shader parses and validates with naga (no GPU needed) as it is
//! compiled — with f32 element types, and the f16 shaders with every pair
//! of element types the device layer uses — and the shader table
//! `wgpipe::kernels::SHADERS` lists exactly the files in `shaders/`.

use std::collections::BTreeSet;

use naga::valid::{Capabilities, ValidationFlags, Validator};
use wgpipe::device::Dtype::{F16, F32};
use wgpipe::kernels::{shader_source, Elems, F16_SHADERS, SHADERS};

/// The element types each shader compiles with: f32 for all; the f16
/// shaders also f16, f16 in / f32 out (the LM head, a hop) and f32 in / f16
/// out (a hop).
fn variants(name: &str) -> Vec<Elems> {
    let mut v = vec![Elems::F32];
    if F16_SHADERS.contains(&name) {
        v.extend([
            Elems::of(F16),
            Elems { st: F16, ot: F32 },
            Elems { st: F32, ot: F16 },
        ]);
    }
    v
}

#[test]
fn f16_shaders_are_in_the_table() {
    for name in F16_SHADERS {
        assert!(
            SHADERS.iter().any(|(n, _)| n == name),
            "{name} is not in kernels::SHADERS"
        );
    }
}

#[test]
fn every_shader_parses_and_validates() {
    let mut failures = Vec::new();
    for (name, elems) in SHADERS
        .iter()
        .flat_map(|(name, _)| variants(name).into_iter().map(move |e| (*name, e)))
    {
        let src = &shader_source(name, elems).expect("a shader of the table");
        let path = format!("shaders/{name}.wgsl ({elems:?})");
        let module = match naga::front::wgsl::parse_str(src) {
            Ok(m) => m,
            Err(e) => {
                failures.push(format!(
                    "{name}: parse error\n{}",
                    e.emit_to_string_with_path(src, &path)
                ));
                continue;
            }
        };
        // Subgroup shaders need the capability wgpu grants with Features::SUBGROUP.
        let mut caps = if wgpipe::kernels::SUBGROUP_SHADERS.contains(&name) {
            Capabilities::SUBGROUP
        } else {
            Capabilities::default()
        };
        if elems != Elems::F32 {
            // f16 storage, and pack2x16float / unpack2x16float for the
            // packed weight textures (wgpu grants both with SHADER_F16 on
            // the adapters that have it).
            caps |= Capabilities::SHADER_FLOAT16 | Capabilities::SHADER_FLOAT16_IN_FLOAT32;
        }
        let mut validator = Validator::new(ValidationFlags::all(), caps);
        if let Err(e) = validator.validate(&module) {
            failures.push(format!(
                "{name}: validation error\n{}",
                e.emit_to_string_with_path(src, &path)
            ));
            continue;
        }
        // Kernels::of compiles every shader with entry point `main`.
        assert!(
            module
                .entry_points
                .iter()
                .any(|ep| ep.name == "main" && ep.stage == naga::ShaderStage::Compute),
            "{name}: no `@compute fn main` entry point"
        );
    }
    assert!(
        failures.is_empty(),
        "{} shader(s) failed:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[test]
fn shader_table_matches_shader_files() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
    let files: BTreeSet<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("read_dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "wgsl"))
        .map(|p| {
            p.file_stem()
                .expect("file stem")
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    let table: BTreeSet<String> = SHADERS.iter().map(|(n, _)| n.to_string()).collect();
    assert_eq!(table.len(), SHADERS.len(), "SHADERS lists a name twice");
    let missing: Vec<_> = files.difference(&table).collect();
    let stale: Vec<_> = table.difference(&files).collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "shaders/*.wgsl and kernels::SHADERS disagree: files not in SHADERS {missing:?}, \
         SHADERS entries without a file {stale:?}"
    );
    // Each entry embeds the file of its own name.
    for (name, src) in SHADERS {
        let on_disk =
            std::fs::read_to_string(dir.join(format!("{name}.wgsl"))).expect("read shader");
        assert_eq!(
            *src, on_disk,
            "SHADERS entry `{name}` does not embed shaders/{name}.wgsl"
        );
    }
}

#[test]
fn every_matmul_variant_names_a_shader() {
    use wgpipe::kernels::{MatmulVariant, SUBGROUP_SHADERS};
    for v in MatmulVariant::ALL {
        assert!(
            SHADERS.iter().any(|(n, _)| *n == v.shader()),
            "{v:?} names `{}`, which is not in SHADERS",
            v.shader()
        );
        assert_eq!(
            SUBGROUP_SHADERS.contains(&v.shader()),
            v == MatmulVariant::Subgroup8,
            "{v:?}: only the Subgroup8 variant needs subgroups"
        );
    }
}

#[test]
fn every_shader_compiled_without_zeroing_exists() {
    for name in wgpipe::kernels::NO_WORKGROUP_ZEROING {
        assert!(
            SHADERS.iter().any(|(n, _)| n == name),
            "NO_WORKGROUP_ZEROING names `{name}`, which is not in SHADERS"
        );
    }
}
