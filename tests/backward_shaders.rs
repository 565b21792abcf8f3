//! The backward shaders (shaders/*_backward*.wgsl) are the listed ones, and
//! every shader of `kernels::SHADERS` (forward, backward, optimizer) follows
//! the binding conventions the dispatch functions rely on: one
//! `@compute fn main`, group 0 bindings 0.. without gaps, outputs (read_write
//! buffers, write-only storage textures) first, the params struct last, in a
//! read-only storage buffer and no uniforms anywhere (lavapipe inlines
//! uniform values and recompiles the shader at every bind: README, "Kernel
//! speed"). Naga only, no GPU needed
//! (tests/shaders.rs validates the same table).

use std::path::Path;

use naga::valid::{Capabilities, ValidationFlags, Validator};
use naga::{AddressSpace, ImageClass, StorageAccess, TypeInner};
use wgpipe::kernels::{SHADERS, SUBGROUP_SHADERS};

/// Every backward kernel, one file per op and direction.
const BACKWARD_SHADERS: &[&str] = &[
    "attention_backward",
    "crossentropy_softmax_backward",
    "embedding_backward",
    "gelu_backward",
    "layernorm_backward",
    "matmul_backward_bias",
    "matmul_backward_input",
    "matmul_backward_input_subgroup",
    "matmul_backward_input_vec4",
    "matmul_backward_weight",
    "matmul_backward_weight_subgroup",
    "matmul_backward_weight_vec4",
    "residual_backward",
];

#[test]
fn backward_shader_files_are_the_listed_ones() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("read_dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "wgsl"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .filter(|n| n.contains("_backward"))
        .collect();
    files.sort();
    assert_eq!(files, BACKWARD_SHADERS, "shaders/*_backward*.wgsl");
}

#[test]
fn backward_shaders_are_in_the_shader_table() {
    for name in BACKWARD_SHADERS {
        assert!(
            SHADERS.iter().any(|(n, _)| n == name),
            "{name} is not in kernels::SHADERS"
        );
    }
}

#[test]
fn every_shader_parses_validates_and_follows_the_conventions() {
    let mut failures = Vec::new();
    for (name, src) in SHADERS {
        let shown = format!("shaders/{name}.wgsl");
        let module = match naga::front::wgsl::parse_str(src) {
            Ok(m) => m,
            Err(e) => {
                failures.push(format!(
                    "{name}: parse error\n{}",
                    e.emit_to_string_with_path(src, &shown)
                ));
                continue;
            }
        };
        let caps = if SUBGROUP_SHADERS.contains(name) {
            Capabilities::SUBGROUP
        } else {
            Capabilities::default()
        };
        let mut validator = Validator::new(ValidationFlags::all(), caps);
        if let Err(e) = validator.validate(&module) {
            failures.push(format!(
                "{name}: validation error\n{}",
                e.emit_to_string_with_path(src, &shown)
            ));
            continue;
        }
        let mains: Vec<_> = module
            .entry_points
            .iter()
            .map(|ep| (&ep.name, ep.stage))
            .collect();
        if mains != [(&"main".to_string(), naga::ShaderStage::Compute)] {
            failures.push(format!(
                "{name}: entry points {mains:?}, want one compute `main`"
            ));
        }
        // (binding, address space, type) of the resources, by binding number
        let mut bindings: Vec<(u32, AddressSpace, &TypeInner)> = module
            .global_variables
            .iter()
            .filter_map(|(_, g)| g.binding.as_ref().map(|b| (b.group, b.binding, g)))
            .map(|(group, binding, g)| {
                assert_eq!(group, 0, "{name}: binding {binding} not in group 0");
                (binding, g.space, &module.types[g.ty].inner)
            })
            .collect();
        bindings.sort_by_key(|&(b, _, _)| b);
        let numbers: Vec<u32> = bindings.iter().map(|&(b, _, _)| b).collect();
        let want: Vec<u32> = (0..bindings.len() as u32).collect();
        if numbers != want {
            failures.push(format!("{name}: bindings {numbers:?}, want {want:?}"));
            continue;
        }
        let writable = |s: &AddressSpace, ty: &TypeInner| {
            matches!(s, AddressSpace::Storage { access } if access.contains(StorageAccess::STORE))
                || matches!(ty, TypeInner::Image { class: ImageClass::Storage { access, .. }, .. }
                    if access.contains(StorageAccess::STORE))
        };
        let (last, rest) = bindings.split_last().unwrap();
        let params = matches!(last.1, AddressSpace::Storage { access } if access == StorageAccess::LOAD)
            && matches!(last.2, TypeInner::Struct { .. });
        if !params || bindings.iter().any(|(_, s, _)| *s == AddressSpace::Uniform) {
            failures.push(format!(
                "{name}: want the params struct last, in a read-only storage buffer, and no uniforms"
            ));
        }
        let first_read = rest
            .iter()
            .position(|(_, s, ty)| !writable(s, ty))
            .unwrap_or(rest.len());
        if first_read == 0 || rest[first_read..].iter().any(|(_, s, ty)| writable(s, ty)) {
            let shown: Vec<_> = bindings.iter().map(|(b, s, _)| (b, s)).collect();
            failures.push(format!(
                "{name}: want outputs first, then read-only inputs: {shown:?}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
