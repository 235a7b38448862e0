//! The README's deployment guide as steps a test can follow: its shell blocks, each marked with
//! the machine it runs on (```` ```sh on=NAME ````), and the files the reader is told to carry
//! from one machine to another (`<!-- guide: carry FROM -> TO: FILE... -->`, next to the
//! sentence that says so). A block that needs what a lab cannot have (a Cloudflare account) is
//! marked ```` ```sh skip=WHY ````; every other shell block in the guide must name its machine,
//! so that none goes untested.

use anyhow::Context as _;

/// The section of the README that is the guide.
pub const SECTION: &str = "## Deploying it";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// A shell block to run on `machine`; `line` is where it starts in the README.
    Run {
        machine: String,
        script: String,
        line: usize,
    },
    /// Files (in root's home) to copy from one machine to another.
    Carry {
        from: String,
        to: String,
        files: Vec<String>,
    },
    /// A block the test cannot run, and why.
    Skip { why: String, line: usize },
}

/// The steps of the guide in `readme`, in order.
pub fn steps(readme: &str) -> anyhow::Result<Vec<Step>> {
    let lines: Vec<&str> = readme.lines().collect();
    let start = lines
        .iter()
        .position(|l| *l == SECTION)
        .with_context(|| format!("the README has no {SECTION:?}"))?;
    let mut steps = Vec::new();
    let mut i = start + 1;
    while i < lines.len() && !lines[i].starts_with("## ") {
        let line = lines[i].trim();
        if let Some(directive) = line.strip_prefix("<!-- guide:") {
            let body = directive
                .strip_suffix("-->")
                .with_context(|| format!("README line {}: unclosed guide comment", i + 1))?;
            steps.push(carry(body.trim()).with_context(|| format!("README line {}", i + 1))?);
        } else if let Some(info) = line.strip_prefix("```") {
            let opening = i + 1;
            let mut body = Vec::new();
            i += 1;
            while i < lines.len() && lines[i].trim() != "```" {
                body.push(lines[i]);
                i += 1;
            }
            anyhow::ensure!(i < lines.len(), "README line {opening}: unclosed block");
            let mut words = info.split_whitespace();
            let language = words.next();
            if let Some(shell @ ("bash" | "shell" | "console" | "zsh" | "shell-session")) = language
            {
                anyhow::bail!(
                    "README line {opening}: a {shell} block in the guide; write it as ```sh \
                     on=NAME, so that the guide's test runs it"
                );
            }
            if language == Some("sh") {
                let mark = words.next().unwrap_or_default();
                if let Some(machine) = mark.strip_prefix("on=") {
                    steps.push(Step::Run {
                        machine: machine.to_owned(),
                        script: body.join("\n"),
                        line: opening,
                    });
                } else if let Some(why) = mark.strip_prefix("skip=") {
                    steps.push(Step::Skip {
                        why: why.to_owned(),
                        line: opening,
                    });
                } else {
                    anyhow::bail!(
                        "README line {opening}: a shell block in the guide names its machine \
                         (```sh on=NAME) or why it is not run (```sh skip=WHY)"
                    );
                }
            }
        }
        i += 1;
    }
    Ok(steps)
}

/// `carry FROM -> TO: FILE...`
fn carry(body: &str) -> anyhow::Result<Step> {
    let rest = body
        .strip_prefix("carry ")
        .context("the only guide comment is `carry FROM -> TO: FILE...`")?;
    let (route, files) = rest
        .split_once(':')
        .context("carry: no `:` before the files")?;
    let (from, to) = route.split_once("->").context("carry: no `->`")?;
    let files: Vec<String> = files.split_whitespace().map(str::to_owned).collect();
    anyhow::ensure!(!files.is_empty(), "carry: no files");
    Ok(Step::Carry {
        from: from.trim().to_owned(),
        to: to.trim().to_owned(),
        files,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_and_carries_are_read_in_order_and_an_unmarked_block_is_refused() {
        let readme = "# x\n```sh\nnot the guide\n```\n## Deploying it\ntext\n```sh on=ca\na\nb\n```\n\
                      <!-- guide: carry ca -> lh: x.crt y.crl -->\n```toml\nk = 1\n```\n\
                      ```sh skip=cloudflare\nc\n```\n## Next\n```sh\nd\n```\n";
        assert_eq!(
            steps(readme).unwrap(),
            vec![
                Step::Run {
                    machine: "ca".into(),
                    script: "a\nb".into(),
                    line: 7
                },
                Step::Carry {
                    from: "ca".into(),
                    to: "lh".into(),
                    files: vec!["x.crt".into(), "y.crl".into()]
                },
                Step::Skip {
                    why: "cloudflare".into(),
                    line: 15
                },
            ]
        );
        let unmarked = "## Deploying it\n```sh\nrm -rf /\n```\n";
        assert!(
            steps(unmarked)
                .unwrap_err()
                .to_string()
                .contains("names its machine")
        );
        let bash = "## Deploying it\n```bash\nls\n```\n";
        assert!(
            steps(bash)
                .unwrap_err()
                .to_string()
                .contains("a bash block")
        );
        assert!(steps("## Deploying it\n<!-- guide: carry a b -->\n").is_err());
    }
}
