//! `openbeepboop-node`: the spec's name for `obb-node`. The same program, built from the
//! same file; only the name in its help and hints differs.

#[path = "../main.rs"]
mod program;

fn main() -> std::process::ExitCode {
    program::main()
}
