//! Shell completions and `--help`: `intervene completions bash|zsh|fish` prints a script that
//! names every subcommand and flag (and that bash/zsh/fish parse, where installed); every
//! command's `--help` documents every flag.

mod common;

use std::process::Command;

use common::intervene;

/// The subcommands, from the top-level help's "Commands:" section.
fn subcommands() -> Vec<String> {
    let r = intervene(&["--help"]);
    assert_eq!(r.code, 0, "{r}");
    r.stdout
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(String::from)
        .collect()
}

#[test]
fn completions_name_every_command_and_parse() {
    let cmds = subcommands();
    assert!(cmds.len() >= 10, "{cmds:?}");
    for (shell, marker) in [
        ("bash", "complete -F _intervene"),
        ("zsh", "#compdef intervene"),
        ("fish", "complete -c intervene"),
    ] {
        let r = intervene(&["completions", shell]);
        assert_eq!(r.code, 0, "{r}");
        assert!(r.stdout.contains(marker), "{shell}: no `{marker}`");
        for c in &cmds {
            assert!(r.stdout.contains(c.as_str()), "{shell}: `{c}` missing");
        }
        for flag in ["group-size", "calib-samples", "no-inputs", "threads"] {
            assert!(r.stdout.contains(flag), "{shell}: `{flag}` missing");
        }
        // The shell itself parses the script, where it is installed.
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c");
        std::fs::write(&f, &r.stdout).unwrap();
        let check = match shell {
            "bash" => Command::new("bash").arg("-n").arg(&f).output(),
            "zsh" => Command::new("zsh").arg("-n").arg(&f).output(),
            _ => Command::new("fish").arg("--no-execute").arg(&f).output(),
        };
        match check {
            Ok(o) => assert!(
                o.status.success(),
                "{shell} rejects the script: {}",
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(_) => eprintln!("{shell} not installed: syntax not checked"),
        }
    }
    let r = intervene(&["completions", "tcsh"]);
    assert_eq!(r.code, 2, "{r}");
}

/// Every option line in every command's help has a description after the flag.
#[test]
fn every_flag_is_documented() {
    let mut cmds: Vec<Vec<String>> = vec![vec![]];
    cmds.extend(subcommands().into_iter().map(|c| vec![c]));
    let mut undocumented = Vec::new();
    for c in &cmds {
        let mut args: Vec<&str> = c.iter().map(String::as_str).collect();
        args.push("--help");
        let r = intervene(&args);
        assert_eq!(r.code, 0, "{args:?}: {r}");
        let mut in_options = false;
        let lines: Vec<&str> = r.stdout.lines().collect();
        for (i, l) in lines.iter().enumerate() {
            if l.ends_with(':') && !l.starts_with(' ') {
                in_options = l.starts_with("Options") || l.starts_with("Arguments");
                continue;
            }
            let t = l.trim_start();
            // Option lines (`-o, --output`, `--bits`) and arguments (`<DIR>`); not the `- value:`
            // lines that list an enum's possible values.
            let is_flag = t.starts_with("--")
                || t.starts_with('<')
                || (t.starts_with('-') && t.chars().nth(1).is_some_and(char::is_alphanumeric));
            if !in_options || !is_flag {
                continue;
            }
            // `  --flag <X>  Description` on one line, or the description on the next line
            // (long help).
            let inline = l
                .trim()
                .split("  ")
                .filter(|p| !p.trim().is_empty())
                .count()
                > 1;
            let next = lines
                .get(i + 1)
                .is_some_and(|n| n.starts_with("          ") && !n.trim_start().starts_with('-'));
            if !inline && !next {
                undocumented.push(format!("{c:?}: {}", l.trim()));
            }
        }
    }
    assert!(undocumented.is_empty(), "{undocumented:#?}");
}
