//! Man pages and shell completions for `luod` and `luoctl`, made from their
//! command-line definitions ([`crate::cli::Cli`], [`crate::ctl::Cli`]).
//!
//! The repository ships them under `contrib/`; `cargo run -p luod --example
//! gen-docs` writes them again (a test fails when they are stale).

use std::io;
use std::path::{Path, PathBuf};

use clap::CommandFactory;
use clap_complete::Shell;
use clap_mangen::roff::{bold, roman, Roff};
use clap_mangen::Man;

/// The command that writes [`files`] into the repository.
pub const REGENERATE: &str = "cargo run -p luod --example gen-docs";

/// A generated file: its path under the repository's root, and its
/// contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    /// Where it goes, relative to the repository's root.
    pub path: PathBuf,
    /// What it holds.
    pub contents: Vec<u8>,
}

/// A man page section of our own, after the options: title and
/// paragraphs.
type Section = (&'static str, &'static [&'static str]);

const LUOD_SECTIONS: &[Section] = &[
    (
        "ENVIRONMENT",
        &[
            "LUOD_SOCKET: the socket path when --socket is not given.",
            "LUOD_LOG: what to log when --log-level is not given: a level (error, warn, \
             info, debug, trace) or tracing-subscriber EnvFilter directives such as \
             luod=debug or info,luod::agent=trace. The default is info. Logs go to stderr.",
            "NOTIFY_SOCKET: set by systemd; with --keeper auto, luod keeps the copies of \
             the files in custody in systemd's fd store.",
        ],
    ),
    (
        "EXIT STATUS",
        &[
            "0: stopped by SIGTERM or SIGINT.",
            "1: could not start or serve (the message says why).",
            "2: usage error, or a backend that is not available.",
        ],
    ),
    (
        "SEE ALSO",
        &["luoctl(1), docs/operations.md in the luo sources."],
    ),
];

const LUOCTL_SECTIONS: &[Section] = &[
    (
        "ENVIRONMENT",
        &["LUOD_SOCKET: luod's socket when --socket is not given."],
    ),
    (
        "EXIT STATUS",
        &[
            "0: success.",
            "1: the agent refused the request (the message names the errno).",
            "2: usage error.",
            "3: cannot reach the agent (not running, wrong socket, no permission, or it hung up).",
            "4: protocol error (an unexpected reply: luoctl and luod versions differ?).",
            "Errors go to stderr as \"luoctl: MESSAGE\", often followed by a \"hint:\" line.",
        ],
    ),
    (
        "SEE ALSO",
        &["luod(8), docs/operations.md in the luo sources."],
    ),
];

/// Every generated file, in a fixed order.
pub fn files() -> Vec<File> {
    let mut out = Vec::new();
    man_pages(&mut out, crate::cli::Cli::command(), "8", LUOD_SECTIONS);
    man_pages(&mut out, crate::ctl::Cli::command(), "1", LUOCTL_SECTIONS);
    for (name, mut cmd) in [
        ("luod", crate::cli::Cli::command()),
        ("luoctl", crate::ctl::Cli::command()),
    ] {
        for (shell, file) in [
            (Shell::Bash, format!("{name}.bash")),
            (Shell::Zsh, format!("_{name}")),
            (Shell::Fish, format!("{name}.fish")),
        ] {
            let mut contents = Vec::new();
            clap_complete::generate(shell, &mut cmd, name, &mut contents);
            out.push(File {
                path: Path::new("contrib/completions").join(file),
                contents,
            });
        }
    }
    out
}

/// The directories [`files`] go to; [`write()`] leaves nothing else in them.
pub const DIRS: [&str; 2] = ["contrib/man", "contrib/completions"];

/// Writes [`files`] under `root`, the repository's root, and removes the
/// files in [`DIRS`] that are not generated any more (a command that is
/// gone).
pub fn write(root: &Path) -> io::Result<()> {
    let files = files();
    for dir in DIRS {
        for entry in std::fs::read_dir(root.join(dir)).into_iter().flatten() {
            let entry = entry?;
            let path = Path::new(dir).join(entry.file_name());
            if !files.iter().any(|f| f.path == path) {
                std::fs::remove_file(entry.path())?;
            }
        }
    }
    for f in files {
        let path = root.join(&f.path);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&path, &f.contents)?;
    }
    Ok(())
}

/// The page of `cmd` and one per (nested) subcommand: `luoctl.1`,
/// `luoctl-show.1`, `luoctl-agent-upgrade.1`.
fn man_pages(out: &mut Vec<File>, cmd: clap::Command, section: &str, extra: &[Section]) {
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    // The page's NAME line already names the command.
    let prefix = format!("{}: ", cmd.get_name());
    if let Some(about) = cmd.get_about().map(|a| a.to_string()) {
        if let Some(rest) = about.strip_prefix(&prefix) {
            cmd = cmd.about(rest.to_string());
        }
    }
    if let Some(long) = cmd.get_long_about().map(|a| a.to_string()) {
        if let Some((first, rest)) = long.split_once("\n\n") {
            if first.starts_with(&prefix) {
                cmd = cmd.long_about(rest.to_string());
            }
        }
    }
    page(out, &cmd, section, extra);
}

fn page(out: &mut Vec<File>, cmd: &clap::Command, section: &str, extra: &[Section]) {
    let man = Man::new(cmd.clone()).section(section).manual("luo");
    let mut contents = Vec::new();
    render(&man, cmd, extra, &mut contents).expect("writing to a Vec");
    out.push(File {
        path: Path::new("contrib/man").join(man.get_filename()),
        contents,
    });
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let see_also: &[Section] = &[];
        page(out, sub, section, see_also);
    }
}

/// clap_mangen's sections, then ours in place of the help's epilogue.
fn render(man: &Man, cmd: &clap::Command, extra: &[Section], w: &mut Vec<u8>) -> io::Result<()> {
    man.render_title(w)?;
    man.render_name_section(w)?;
    man.render_synopsis_section(w)?;
    man.render_description_section(w)?;
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(w)?;
    }
    if cmd.get_subcommands().any(|s| !s.is_hide_set()) {
        man.render_subcommands_section(w)?;
    }
    let mut roff = Roff::new();
    for (title, paragraphs) in extra {
        roff.control("SH", [*title]);
        for p in *paragraphs {
            match p.split_once(": ") {
                Some((term, text)) if !term.contains(' ') || term.len() == 1 => {
                    roff.control("TP", []);
                    roff.text([bold(term)]);
                    roff.text([roman(text)]);
                }
                _ => {
                    roff.control("PP", []);
                    roff.text([roman(*p)]);
                }
            }
        }
    }
    roff.to_writer(w)?;
    if cmd.get_version().is_some() {
        man.render_version_section(w)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_page_and_script_is_named_once() {
        let files = files();
        let mut paths: Vec<_> = files.iter().map(|f| f.path.clone()).collect();
        paths.sort();
        paths.dedup();
        assert_eq!(paths.len(), files.len());
        for want in [
            "contrib/man/luod.8",
            "contrib/man/luoctl.1",
            "contrib/man/luoctl-show.1",
            "contrib/man/luoctl-agent-upgrade.1",
            "contrib/completions/luoctl.bash",
            "contrib/completions/_luoctl",
            "contrib/completions/luoctl.fish",
            "contrib/completions/luod.bash",
            "contrib/completions/_luod",
            "contrib/completions/luod.fish",
        ] {
            assert!(paths.contains(&PathBuf::from(want)), "{want} missing");
        }
    }
}
