//! Writes the man pages (`contrib/man`) and shell completions
//! (`contrib/completions`) of `luod` and `luoctl`, made from their
//! command-line definitions. Run it after changing either command line:
//!
//! ```text
//! cargo run -p luod --example gen-docs
//! ```
//!
//! (`crates/luod/tests/generated.rs` fails while the shipped files are
//! stale.)

use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    match luod::gen::write(&root) {
        Ok(()) => {
            for f in luod::gen::files() {
                println!("wrote {}", f.path.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("gen-docs: {e}");
            ExitCode::FAILURE
        }
    }
}
