//! The man pages and shell completions shipped under `contrib/` are the
//! ones the current command-line definitions make.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

#[test]
fn shipped_man_pages_and_completions_are_up_to_date() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let files = luod::gen::files();
    let mut stale = Vec::new();
    for f in &files {
        match std::fs::read(root.join(&f.path)) {
            Ok(shipped) if shipped == f.contents => {}
            Ok(_) => stale.push(format!("{} differs", f.path.display())),
            Err(e) => stale.push(format!("{}: {e}", f.path.display())),
        }
    }
    // Nor may a page of a command that is gone linger.
    let made: BTreeSet<PathBuf> = files.iter().map(|f| f.path.clone()).collect();
    for dir in luod::gen::DIRS {
        for entry in std::fs::read_dir(root.join(dir)).into_iter().flatten() {
            let path = Path::new(dir).join(entry.unwrap().file_name());
            if !made.contains(&path) {
                stale.push(format!("{} is not generated any more", path.display()));
            }
        }
    }
    assert!(
        stale.is_empty(),
        "the shipped man pages and completions are stale:\n  {}\nrefresh them with `{}` and commit the result",
        stale.join("\n  "),
        luod::gen::REGENERATE
    );
}
