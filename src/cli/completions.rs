//! `intervene completions bash|zsh|fish`: a completion script on stdout, generated from the
//! same clap definitions the parser uses, so it never drifts from the real flags.

use std::process::ExitCode;

use clap::{Args, ValueEnum};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Args, Debug)]
pub struct CompletionsArgs {
    /// The shell to generate completions for. Install, e.g.:
    /// bash: `intervene completions bash > ~/.local/share/bash-completion/completions/intervene`;
    /// zsh: into a directory on `$fpath` as `_intervene`;
    /// fish: `> ~/.config/fish/completions/intervene.fish`.
    #[arg(value_enum)]
    pub shell: Shell,
}

pub fn run(a: CompletionsArgs, mut cmd: clap::Command) -> anyhow::Result<ExitCode> {
    let shell = match a.shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    let name = cmd.get_name().to_string();
    clap_complete::generate(shell, &mut cmd, name, &mut std::io::stdout().lock());
    Ok(ExitCode::SUCCESS)
}
