//! What the demo shows: numbered steps, and each command as a person would type it, run for
//! real, with its output.

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context as _;
use integration::lab::Ns;
use integration::mesh;

/// The steps so far, for the summary and for naming the one that failed.
#[derive(Debug, Default)]
pub struct Steps {
    pub done: usize,
    pub current: String,
    bold: bool,
}

impl Steps {
    pub fn new() -> Self {
        Self {
            bold: std::io::stdout().is_terminal(),
            ..Self::default()
        }
    }

    pub fn start(&mut self, title: &str) {
        if !self.current.is_empty() {
            self.done += 1;
        }
        self.current = title.to_owned();
        let n = self.done + 1;
        if self.bold {
            println!("\n\x1b[1m== {n}. {title}\x1b[0m");
        } else {
            println!("\n== {n}. {title}");
        }
    }

    /// Marks the last step done.
    pub fn finish(&mut self) {
        self.done += 1;
        self.current.clear();
    }
}

/// Runs commands in the demo's directory, showing each one first.
#[derive(Debug)]
pub struct Shell {
    pub dir: PathBuf,
}

/// A program: one of this workspace's binaries (found next to the demo) or one on PATH.
fn resolve(program: &str) -> PathBuf {
    mesh::binary(program).unwrap_or_else(|_| PathBuf::from(program))
}

impl Shell {
    /// Shows and runs `program args` (inside `ns`, if given) and returns its output; fails,
    /// with the output, if it exits non-zero.
    pub fn run(&self, ns: Option<&Ns>, program: &str, args: &[&str]) -> anyhow::Result<String> {
        let output = self.run_quiet(ns, program, args)?;
        for line in output.lines() {
            println!("  {line}");
        }
        Ok(output)
    }

    /// Like [`Shell::run`], showing the command but not its output.
    pub fn run_quiet(
        &self,
        ns: Option<&Ns>,
        program: &str,
        args: &[&str],
    ) -> anyhow::Result<String> {
        self.run_shown_as(ns, program, args, &shown(ns, program, args))
    }

    /// Runs `program args` (inside `ns`, if given), showing `display` as the command line, and
    /// returns its output; fails, with the output, if it exits non-zero.
    pub fn run_shown_as(
        &self,
        ns: Option<&Ns>,
        program: &str,
        args: &[&str],
        display: &str,
    ) -> anyhow::Result<String> {
        println!("$ {display}");
        let mut command = match ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns.name()]).arg(resolve(program));
                c
            }
            None => Command::new(resolve(program)),
        };
        let output = command
            .args(args)
            .current_dir(&self.dir)
            .output()
            .with_context(|| format!("running {program} (is it installed? `make deps`)"))?;
        let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&output.stderr));
        anyhow::ensure!(
            output.status.success(),
            "`{display}` failed ({}):\n{text}",
            output.status
        );
        Ok(text)
    }

    /// `path` relative to the demo's directory, as the shown commands name files.
    pub fn relative<'p>(&self, path: &'p Path) -> &'p Path {
        path.strip_prefix(&self.dir).unwrap_or(path)
    }
}

/// The command line as a person would type it.
pub fn shown(ns: Option<&Ns>, program: &str, args: &[&str]) -> String {
    let mut line = match ns {
        Some(ns) => format!("ip netns exec {} {program}", ns.name()),
        None => program.to_owned(),
    };
    for arg in args {
        if arg.is_empty() || arg.contains([' ', '"', '\'', '$', '&', '?', '*']) {
            line.push_str(&format!(" '{}'", arg.replace('\'', "'\\''")));
        } else {
            line.push(' ');
            line.push_str(arg);
        }
    }
    line
}
