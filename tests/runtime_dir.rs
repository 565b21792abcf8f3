//! Nothing alarming that is not an error: without a desktop session
//! (`XDG_RUNTIME_DIR` unset, or naming no directory) the Vulkan loader
//! complains on stderr once per instance; `wgpipe` points the variable at a
//! private directory first, so the complaint never appears.

use std::process::Command;

fn adapters_stderr(xdg: Option<&str>) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wgpipe"));
    cmd.arg("adapters");
    match xdg {
        Some(v) => cmd.env("XDG_RUNTIME_DIR", v),
        None => cmd.env_remove("XDG_RUNTIME_DIR"),
    };
    let out = cmd.output().expect("run wgpipe");
    assert!(out.status.success(), "{:?}", out);
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn no_runtime_dir_complaint_without_a_desktop_session() {
    for xdg in [None, Some(""), Some("/nonexistent/wgpipe-runtime")] {
        let err = adapters_stderr(xdg);
        assert!(
            !err.contains("XDG_RUNTIME_DIR"),
            "XDG_RUNTIME_DIR={xdg:?}: {err}"
        );
    }
}
