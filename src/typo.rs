//! "Did you mean `up`?": a first word that is neither a directory nor a verb, but close to a
//! verb, is taken for a typo of it. Only ever asked once the word is known not to be a path,
//! so a warm `agentenv PATH` does no more than before.

use std::ffi::OsString;

use crate::diag::Diagnostic;

/// The verb `word` most likely misspells, if any is close enough.
pub fn closest_verb(word: &str) -> Option<String> {
    use clap::CommandFactory;
    let cmd = crate::cli::Cli::command();
    cmd.get_subcommands()
        .filter(|c| !c.is_hide_set())
        .flat_map(|c| std::iter::once(c.get_name()).chain(c.get_all_aliases()))
        .map(|verb| (strsim::damerau_levenshtein(word, verb), verb))
        .filter(|(d, verb)| *d > 0 && *d <= if verb.len() <= 3 { 1 } else { 2 })
        .min_by_key(|(d, _)| *d)
        .map(|(_, verb)| verb.to_string())
}

/// The error for a first word `word` (followed by `rest`) that names no directory and is close
/// to `verb`.
pub fn did_you_mean(word: &str, verb: &str, rest: &[OsString]) -> Diagnostic {
    let mut suggestion = format!("agentenv {verb}");
    for a in rest {
        suggestion.push(' ');
        suggestion.push_str(&crate::util::shell_word(&a.to_string_lossy()));
    }
    Diagnostic::new(format!("'{word}' is neither a verb nor a directory here"))
        .hint(format!("did you mean `{suggestion}`?"))
}

/// For a command line clap refused: the typo of a verb it starts with, if that is what it is.
pub fn explain_refusal(args: &[OsString]) -> Option<Diagnostic> {
    let word = args.get(1)?.to_str()?;
    if word.starts_with('-') {
        return None;
    }
    let (path, _) = word.split_once('#').unwrap_or((word, ""));
    if std::path::Path::new(path).exists() {
        return None;
    }
    let verb = closest_verb(word)?;
    Some(did_you_mean(word, &verb, &args[2..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_words_name_their_verb_and_far_ones_none() {
        assert_eq!(closest_verb("upp").as_deref(), Some("up"));
        assert_eq!(closest_verb("exce").as_deref(), Some("exec"));
        assert_eq!(closest_verb("doctr").as_deref(), Some("doctor"));
        assert_eq!(closest_verb("src"), None);
        assert_eq!(closest_verb("up"), None);
    }
}
