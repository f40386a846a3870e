//! Where flag values came from, so an error names what the operator actually set: a value
//! read from an environment variable is reported as `VARIABLE (--flag)`, one from the command
//! line as `--flag` (issue 16: `PREFECT_EXPORTER_DEDUP_WINDOW=banana` was reported as a bad
//! `--dedup-window`, which the command line did not have).
//!
//! It owns the parse of the process's arguments ([`parse`]) and the one-line rendering of a
//! clap error ([`error_line`]); it never prints.

use std::ffi::OsString;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::parser::ValueSource;
use clap::{ArgMatches, Command, CommandFactory, FromArgMatches};

use super::Cli;

/// The flags whose values came from environment variables: (`--flag`, `VARIABLE`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FromEnv(Vec<(String, String)>);

impl FromEnv {
    /// The variable `flag` (`--name`) was read from, if it was.
    pub fn variable(&self, flag: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(f, _)| f == flag)
            .map(|(_, var)| var.as_str())
    }
}

/// Parses `args` (the program name first) into the flags, and which of them the environment
/// set.
///
/// The bare invocation's flags (`run`'s, at the top level) read their environment variables
/// only when no subcommand is given: with `replay ...` or `serve-replay ...` a variable meant
/// for `run` (say a bad `PREFECT_EXPORTER_LISTEN`) is not parsed, so it can neither stop
/// the subcommand nor be blamed on the subcommand's own `--listen`.
pub fn parse(args: Vec<OsString>) -> Result<(Cli, FromEnv), clap::Error> {
    let without_top_level_env = Cli::command().mut_args(|arg| {
        if arg.is_global_set() {
            arg
        } else {
            arg.env(None)
        }
    });
    if let Ok(matches) = without_top_level_env
        .clone()
        .try_get_matches_from(args.clone())
    {
        if matches.subcommand().is_some() {
            return from_matches(&without_top_level_env, &matches);
        }
    }
    let command = Cli::command();
    let matches = command.clone().try_get_matches_from(args)?;
    from_matches(&command, &matches)
}

fn from_matches(command: &Command, matches: &ArgMatches) -> Result<(Cli, FromEnv), clap::Error> {
    let cli = Cli::from_arg_matches(matches)?;
    let mut from_env = FromEnv::default();
    collect_env_sources(command, matches, &mut from_env);
    Ok((cli, from_env))
}

fn collect_env_sources(command: &Command, matches: &ArgMatches, out: &mut FromEnv) {
    for arg in command.get_arguments() {
        let from_env = matches
            .try_contains_id(arg.get_id().as_str())
            .unwrap_or(false)
            && matches.value_source(arg.get_id().as_str()) == Some(ValueSource::EnvVariable);
        if let (true, Some(long), Some(var)) = (from_env, arg.get_long(), arg.get_env()) {
            let flag = format!("--{long}");
            if out.variable(&flag).is_none() {
                out.0.push((flag, var.to_string_lossy().into_owned()));
            }
        }
    }
    if let Some((name, sub_matches)) = matches.subcommand() {
        if let Some(sub) = command.find_subcommand(name) {
            collect_env_sources(sub, sub_matches, out);
        }
    }
}

/// A clap error (other than help or version) as one line: clap's first paragraph, its lines
/// joined. A bad value that came from an environment variable (its flag is not among `args`
/// and the variable holds exactly that value) names the variable and the flag.
pub fn error_line(e: &clap::Error, args: &[OsString]) -> String {
    let rendered = e.render().to_string();
    let paragraph: Vec<&str> = rendered
        .lines()
        .map(str::trim)
        .skip_while(|l| l.is_empty())
        .take_while(|l| !l.is_empty())
        .collect();
    if paragraph.is_empty() {
        return "error: invalid arguments".to_owned();
    }
    let line = paragraph.join(" ");
    if !matches!(
        e.kind(),
        ErrorKind::InvalidValue | ErrorKind::ValueValidation
    ) {
        return line;
    }
    let (Some(ContextValue::String(arg)), Some(ContextValue::String(value))) = (
        e.get(ContextKind::InvalidArg),
        e.get(ContextKind::InvalidValue),
    ) else {
        return line;
    };
    let flag = arg.split_whitespace().next().unwrap_or(arg);
    match env_source(flag, value, args) {
        Some(var) => line.replacen(&format!("'{arg}'"), &format!("{var} ({flag})"), 1),
        None => line,
    }
}

/// The variable that gave `flag` its `value`: `None` when the command line gives the flag
/// that value (`--flag value` or `--flag=value`).
fn env_source(flag: &str, value: &str, args: &[OsString]) -> Option<String> {
    let long = flag.strip_prefix("--")?;
    let joined = format!("{flag}={value}");
    let given = args.iter().any(|a| a.to_str() == Some(joined.as_str()))
        || args
            .windows(2)
            .any(|pair| pair[0].to_str() == Some(flag) && pair[1].to_str() == Some(value));
    if given {
        return None;
    }
    let mut variables = Vec::new();
    env_variables(&Cli::command(), long, &mut variables);
    variables
        .into_iter()
        .find(|var| std::env::var_os(var).is_some_and(|v| v == value))
}

/// Every environment variable of a flag named `--long`, in `command` and its subcommands
/// (one flag name may read different variables in different commands).
fn env_variables(command: &Command, long: &str, out: &mut Vec<String>) {
    for arg in command.get_arguments() {
        if arg.get_long() == Some(long) {
            if let Some(var) = arg.get_env() {
                out.push(var.to_string_lossy().into_owned());
            }
        }
    }
    for sub in command.get_subcommands() {
        env_variables(sub, long, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_sources_are_found_in_subcommands_and_the_command_line_wins() {
        let args = ["x", "replay", "a.jsonl", "--dedup-window", "5m"];
        let (_, none) = parse(args.into_iter().map(OsString::from).collect()).unwrap();
        assert_eq!(none, FromEnv::default());
        assert_eq!(none.variable("--dedup-window"), None);
    }

    #[test]
    fn a_command_line_value_is_never_attributed_to_the_environment() {
        let args: Vec<OsString> = ["x", "replay", "--dedup-window=banana", "a.jsonl"]
            .into_iter()
            .map(OsString::from)
            .collect();
        let e = parse(args.clone()).unwrap_err();
        let line = error_line(&e, &args);
        assert!(
            line.starts_with("error: invalid value 'banana' for '--dedup-window <DEDUP_WINDOW>'"),
            "{line}"
        );
    }
}
