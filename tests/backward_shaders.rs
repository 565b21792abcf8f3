//! The backward shaders (shaders/*_backward*.wgsl) are the listed ones, and
//! every shader of `kernels::SHADERS` (forward, backward, optimizer) follows
//! the binding conventions the dispatch functions rely on: one
//! `@compute fn main`, group 0 bindings 0.. without gaps, read_write outputs
//! first, the params struct last, in a read-only storage buffer (not a
//! uniform: see `kernels::Dispatch` for why). Naga only, no GPU needed
//! (tests/shaders.rs validates the same table).

use std::path::Path;

use naga::valid::{Capabilities, ValidationFlags, Validator};
use naga::{AddressSpace, StorageAccess};
use wgpipe::kernels::{shader_source, Elems, SHADERS, SUBGROUP_SHADERS};

/// Every backward kernel, one file per op and direction.
const BACKWARD_SHADERS: &[&str] = &[
    "attention_backward",
    "attention_backward_subgroup",
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
    "rmsnorm_backward",
    "rope_backward",
    "swiglu_backward",
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
    for (name, _) in SHADERS {
        let shown = format!("shaders/{name}.wgsl");
        let src = &shader_source(name, Elems::F32).expect("a shader of the table");
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
        // (binding, address space) of the resources, by binding number
        // A storage texture written to counts as a read_write output.
        let space = |g: &naga::GlobalVariable| match module.types[g.ty].inner {
            naga::TypeInner::Image {
                class: naga::ImageClass::Storage { access, .. },
                ..
            } if access.contains(StorageAccess::STORE) => AddressSpace::Storage { access },
            _ => g.space,
        };
        let mut bindings: Vec<(u32, AddressSpace)> = module
            .global_variables
            .iter()
            .filter_map(|(_, g)| g.binding.as_ref().map(|b| (b.group, b.binding, space(g))))
            .map(|(group, binding, space)| {
                assert_eq!(group, 0, "{name}: binding {binding} not in group 0");
                (binding, space)
            })
            .collect();
        bindings.sort_by_key(|&(b, _)| b);
        let numbers: Vec<u32> = bindings.iter().map(|&(b, _)| b).collect();
        let want: Vec<u32> = (0..bindings.len() as u32).collect();
        if numbers != want {
            failures.push(format!("{name}: bindings {numbers:?}, want {want:?}"));
            continue;
        }
        let writable = |s: &AddressSpace| matches!(s, AddressSpace::Storage { access } if access.contains(StorageAccess::STORE));
        let (last, rest) = bindings.split_last().unwrap();
        let read_only = |s: &AddressSpace| matches!(s, AddressSpace::Storage { access } if !access.contains(StorageAccess::STORE));
        if !read_only(&last.1) || bindings.iter().any(|(_, s)| *s == AddressSpace::Uniform) {
            failures.push(format!(
                "{name}: the params must be the last binding, read-only storage, and no binding a uniform"
            ));
        }
        let first_read = rest
            .iter()
            .position(|(_, s)| !writable(s))
            .unwrap_or(rest.len());
        if first_read == 0 || rest[first_read..].iter().any(|(_, s)| writable(s)) {
            failures.push(format!(
                "{name}: want read_write outputs first, then read-only inputs: {bindings:?}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
